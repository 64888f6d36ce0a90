"""Another user's ids and paths answer 404 on every route, and bad input gets a 4xx in the
one error shape: the app and a worker in process (``tests/support/inprocess.py``) on the
real Postgres."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.support.images import jpeg, quadrants
from tests.support.inprocess import in_process_site
from tests.support.sse import bearer
from tests.support.uploads import upload as uploaded

pytestmark = pytest.mark.timeout(120)

ALICE, BOB = bearer("alice"), bearer("bob")


@pytest.fixture
async def client(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with in_process_site(database_url, MEDIAJOBS_CORS_ORIGINS="https://app.example") as http:
        yield http


async def upload(client: httpx.AsyncClient, headers: dict[str, str]) -> dict[str, Any]:
    """A processed upload of the caller's: its ``mediaId``, ``jobId`` and ``objectPath``."""
    item = await uploaded(client, headers, jpeg(quadrants(900, 600)))
    assert item["job"]["state"] == "succeeded", item
    return {"mediaId": item["id"], "jobId": item["job"]["id"], "objectPath": item["objectPath"]}


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> None:
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    if code is not None:
        assert body["error"]["code"] == code, body


async def test_another_users_media_and_jobs_answer_404_on_every_route(
    client: httpx.AsyncClient,
) -> None:
    mine = await upload(client, ALICE)
    media_id, job_id, path = mine["mediaId"], mine["jobId"], mine["objectPath"]
    attempts = [
        client.get(f"/media/{media_id}", headers=BOB),
        client.patch(f"/media/{media_id}", json={"altText": "x"}, headers=BOB),
        client.delete(f"/media/{media_id}", headers=BOB),
        client.delete(f"/media/{path}", headers=BOB),
        client.post("/media/restore", json={"path": path}, headers=BOB),
        client.post("/media/upload/complete", json={"objectPath": path}, headers=BOB),
        client.get(f"/jobs/{job_id}", headers=BOB),
        client.post(f"/jobs/{job_id}/cancel", headers=BOB),
        client.post(f"/jobs/{job_id}/retry", headers=BOB),
        client.get(f"/jobs/{job_id}/events", headers=BOB),
    ]
    for response in await asyncio.gather(*attempts):
        assert_error(response, 404)
    assert (await client.get("/media", headers=BOB)).json()["items"] == []
    assert (await client.get("/jobs", headers=BOB)).json()["items"] == []
    # Replacing someone else's media is refused the same way.
    theirs = await client.post(
        "/media/upload/init",
        json={"filename": "b.jpg", "contentType": "image/jpeg", "size": 10},
        headers=BOB,
    )
    assert_error(
        await client.post(
            "/media/upload/complete",
            json={"objectPath": theirs.json()["objectPath"], "replaces": media_id},
            headers=BOB,
        ),
        404,
    )
    # Alice still sees all of it.
    assert (await client.get(f"/media/{media_id}", headers=ALICE)).status_code == 200


async def test_bad_input_gets_a_4xx_in_the_error_shape(client: httpx.AsyncClient) -> None:
    post = client.post
    init = "/media/upload/init"
    raw = {"headers": {**ALICE, "content-type": "application/json"}}
    assert_error(await post(init, content=b"{not json", **raw), 400, "malformed_json")
    assert_error(await post(init, content=b"[1, 2]", **raw), 400, "malformed_json")
    assert_error(await post(init, content=b"x" * 70_000, **raw), 413, "body_too_large")
    ok = {"filename": "a.jpg", "contentType": "image/jpeg", "size": 10}
    assert_error(await post(init, json={**ok, "admin": True}, headers=ALICE), 400, "unknown_field")
    assert_error(await post(init, json={**ok, "size": "10"}, headers=ALICE), 422, "invalid_field")
    assert_error(await post(init, json={**ok, "size": True}, headers=ALICE), 422, "invalid_field")
    assert_error(await post(init, json={"filename": "a.jpg"}, headers=ALICE), 422, "missing_field")
    assert_error(
        await post(init, json={**ok, "size": 10**12}, headers=ALICE), 413, "file_too_large"
    )
    assert_error(
        await post(init, json={**ok, "contentType": "text/html"}, headers=ALICE),
        415,
        "unsupported_type",
    )
    assert_error(
        await post(init, json={**ok, "contentType": "image/svg+xml"}, headers=ALICE),
        415,
        "unsupported_type",
    )
    # The name never refuses an upload: the bytes decide, once they are there.
    gif_name = await post(init, json={**ok, "filename": "a.gif", "contentType": ""}, headers=ALICE)
    assert gif_name.status_code == 200, gif_name.text
    # Empty or generic types are fine (browsers send none for HEIC).
    heic = await post(
        init, json={"filename": "IMG.HEIC", "contentType": "", "size": 10}, headers=ALICE
    )
    assert heic.status_code == 200, heic.text

    complete = "/media/upload/complete"
    for trick in [
        "media/alice/uploads/../../bob/uploads/x/a.jpg",
        "/etc/passwd",
        "media/bob/uploads/x/a.jpg",
        "media/alice/uploads/x\\..\\a.jpg",
        "media/alice/uploads/x/%2e%2e/a.jpg",
    ]:
        assert_error(await post(complete, json={"objectPath": trick}, headers=ALICE), 404)
    assert_error(
        await post(complete, json={"objectPath": "media/alice/uploads/none/a.jpg"}, headers=ALICE),
        404,
        "upload_not_found",
    )
    for path in ["..%2F..%2Fetc%2Fpasswd", "media%2Fbob%2Fx", "%2e%2e/x"]:
        response = await client.delete(f"/media/{path}", headers=ALICE)
        assert response.status_code in (400, 404), (path, response.status_code)
        assert "error" in response.json()

    get = client.get
    assert_error(await get("/media?limit=abc", headers=ALICE), 400, "invalid_query")
    assert_error(await get("/media?limit=100000", headers=ALICE), 400, "invalid_query")
    assert_error(await get("/media?status=bogus", headers=ALICE), 400, "invalid_query")
    assert_error(await get("/media?cursor=!!!", headers=ALICE), 400, "invalid_cursor")
    assert_error(await get("/media?prefix=../bob", headers=ALICE), 400, "invalid_prefix")
    assert_error(await get("/jobs?state=nope", headers=ALICE), 400, "invalid_query")
    assert_error(await get("/media/not-a-uuid", headers=ALICE), 404, "media_not_found")
    assert_error(await get("/jobs/not-a-uuid", headers=ALICE), 404, "job_not_found")

    missing = await get("/media")
    assert_error(missing, 401, "missing_credentials")
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert_error(await get("/media", headers={"Authorization": "Bearer nope"}), 401)
    assert_error(await get("/v1/admin/site-policies", headers=ALICE), 403, "forbidden")
    assert_error(await get("/no/such/route"), 404)
    assert_error(await client.put("/media", headers=ALICE), 405)


async def test_a_patch_changes_only_the_given_fields_and_validates_them(
    client: httpx.AsyncClient,
) -> None:
    mine = await upload(client, ALICE)
    url = f"/media/{mine['mediaId']}"
    patched = await client.patch(
        url, json={"altText": "a red square", "sortOrder": 7}, headers=ALICE
    )
    assert patched.status_code == 200, patched.text
    assert (patched.json()["altText"], patched.json()["sortOrder"]) == ("a red square", 7)
    assert_error(await client.patch(url, json={"purpose": "Not Valid"}, headers=ALICE), 422)
    assert_error(await client.patch(url, json={"altText": "x" * 1001}, headers=ALICE), 422)
    for unprintable in ("a\u202eb", "a\x07b", "a\x85b"):  # shown to people: no tricks
        refused = await client.patch(url, json={"altText": unprintable}, headers=ALICE)
        assert_error(refused, 422, "invalid_field")
    lines = await client.patch(url, json={"altText": "two\nlines\tand a tab"}, headers=ALICE)
    assert lines.status_code == 200, lines.text
    assert_error(await client.patch(url, json={"status": "ready"}, headers=ALICE), 400)


async def test_request_ids_metrics_and_cors(client: httpx.AsyncClient) -> None:
    made = await client.get("/media", headers=ALICE)
    assert len(made.headers["x-request-id"]) == 32
    echoed = await client.get("/media", headers={**ALICE, "X-Request-Id": "client-42"})
    assert echoed.headers["x-request-id"] == "client-42"
    replaced = await client.get("/media", headers={**ALICE, "X-Request-Id": "bad id;" * 20})
    assert len(replaced.headers["x-request-id"]) == 32  # not echoed: made anew
    assert_error(await client.get("/nope"), 404)

    metrics = (await client.get("/metrics")).text
    assert 'mediajobs_http_requests_total{method="GET",route="/media",status="200"}' in metrics
    assert (
        'mediajobs_http_request_duration_seconds_bucket{le="0.005",method="GET",route="/media"}'
        in metrics
    )
    assert 'route="unmatched",status="404"' in metrics
    assert 'mediajobs_jobs{state="queued"}' in metrics
    assert "mediajobs_queue_depth " in metrics
    assert "mediajobs_queue_oldest_age_seconds " in metrics
    assert "mediajobs_sse_clients " in metrics

    preflight = await client.options(
        "/media",
        headers={
            "Origin": "https://app.example",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://app.example"
    other = await client.get("/media", headers={**ALICE, "Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers
