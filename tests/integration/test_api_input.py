"""Input the routes refuse, in process on the real Postgres: strict JSON bodies, strict
query integers, a site policy no image could pass, an empty ``objectPath``."""

from __future__ import annotations

import httpx
import pytest

from mediajobs.service.auth import Authenticator
from tests.support.sse import SECRET, bearer

pytestmark = pytest.mark.timeout(120)

ALICE = bearer("alice")
ADMIN = {"Authorization": f"Bearer {Authenticator(SECRET).issue_token('root', roles=['admin'])}"}
POLICY = "/v1/admin/site-policies"


def error_of(response: httpx.Response) -> tuple[int, str, str]:
    body = response.json()
    assert set(body) == {"error"}, body
    return response.status_code, body["error"]["code"], body["error"]["message"]


async def test_a_site_policy_no_image_could_pass_is_refused(client: httpx.AsyncClient) -> None:
    before = (await client.get(POLICY, headers=ADMIN)).json()
    for change in [
        {"minWidth": 20000, "minHeight": 20000, "maxMegapixels": 1},
        {"minWidth": 4000, "minHeight": 200, "maxAspectRatio": 4, "maxMegapixels": 2},
    ]:
        status, code, message = error_of(await client.put(POLICY, json=change, headers=ADMIN))
        assert (status, code) == (422, "invalid_policy"), message
        assert "no image could pass" in message
    status, code, message = error_of(
        await client.put(POLICY, json={"maxMegapixels": 1e-300}, headers=ADMIN)
    )
    assert (status, code, message) == (422, "invalid_field", "maxMegapixels: must be at least 0.01")
    after = (await client.get(POLICY, headers=ADMIN)).json()
    assert after == before
    fine = await client.put(POLICY, json={"maxMegapixels": 40, "minWidth": 150}, headers=ADMIN)
    assert fine.status_code == 200, fine.text
