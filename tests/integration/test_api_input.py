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


async def test_bodies_are_strict_json_on_the_routes(client: httpx.AsyncClient) -> None:
    init = "/media/upload/init"
    headers = {**ALICE, "content-type": "application/json"}
    for raw in ('{"filename": "a.jpg", "size": NaN}', '{"filename": "a.jpg", "size": Infinity}'):
        assert error_of(await client.post(init, content=raw, headers=headers))[:2] == (
            400,
            "malformed_json",
        )
    twice = '{"filename": "a.jpg", "size": 1, "size": 2}'
    status, code, message = error_of(await client.post(init, content=twice, headers=headers))
    assert (status, code) == (400, "malformed_json") and "duplicate key 'size'" in message
    long = '{"filename": "a.jpg", "size": ' + "9" * 5000 + "}"
    assert error_of(await client.post(init, content=long, headers=headers)) == (
        422,
        "invalid_field",
        f"size: must be at most {2**53}",
    )
    empty = await client.post("/media/upload/complete", json={"objectPath": ""}, headers=ALICE)
    assert error_of(empty) == (422, "invalid_field", "objectPath: at least 1 character(s)")


async def test_query_integers_are_plain_digits_on_the_routes(client: httpx.AsyncClient) -> None:
    for path in ("/media", "/jobs"):
        for raw in ("5_0", "%2B5", "%205", "5.0"):
            status, code, message = error_of(await client.get(f"{path}?limit={raw}", headers=ALICE))
            assert (status, code) == (400, "invalid_query") and message.startswith("limit:"), raw
        assert (await client.get(f"{path}?limit=50", headers=ALICE)).status_code == 200
    listed = "'pending', 'processing', 'ready', 'in_review', 'rejected' or 'failed'"
    for status_value in ("bogus", "deleted"):
        refused = await client.get(f"/media?status={status_value}", headers=ALICE)
        assert error_of(refused) == (400, "invalid_query", f"status: must be one of {listed}")
