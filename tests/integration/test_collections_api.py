"""Collections through the API (issue 15): the app and a worker in process on the real
Postgres, review on with a webhook reviewer whose verdicts the test gives, one at a time.

The review gate holds on every read path: an item in review, rejected, failed or deleted is
never in the public read, the cover or the profile image, and appears (with a new ETag) the
moment its review passes. Syncs are atomic and guarded by If-Match; replacement, delete,
restore and purge keep or release an item's place; the public body leaks nothing private.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import psycopg
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from mediajobs.service.auth import Authenticator
from tests.support.http import serve_in_thread
from tests.support.images import camera_exif, jpeg, photo, quadrants
from tests.support.inprocess import in_process_site
from tests.support.sse import SECRET, bearer
from tests.support.uploads import finished, upload
from tests.support.waiting import wait_for

pytestmark = pytest.mark.timeout(240)

ALICE, BOB = bearer("alice"), bearer("bob")
ADMIN = {"Authorization": f"Bearer {Authenticator(SECRET).issue_token('root', roles=['admin'])}"}
LISTING = "/entities/listing/8412/media"
PUBLIC = "/public/entities/listing/8412"


class ReviewGate:
    """A review webhook that answers each item only once the test has decided it."""

    def __init__(self) -> None:
        self.verdicts: dict[str, bool] = {}
        self.lock = threading.Lock()
        self.app = Starlette(routes=[Route("/", self.review, methods=["POST"])])

    def decide(self, media_id: str, allowed: bool) -> None:
        with self.lock:
            self.verdicts[media_id] = allowed

    async def review(self, request: Request) -> JSONResponse:
        """Hold the reviewer's request until the test decides (the worker's review timeout
        is longer than this wait)."""
        media_id = (await request.json())["mediaId"]
        for _ in range(1000):  # 20 s
            with self.lock:
                allowed = self.verdicts.get(media_id)
            if allowed is not None:
                return JSONResponse({"allowed": allowed, "reason": "test verdict"})
            await asyncio.sleep(0.02)
        return JSONResponse({"error": "not decided yet"}, status_code=503)


@pytest.fixture
def gate() -> Iterator[tuple[ReviewGate, str]]:
    reviewer = ReviewGate()
    with serve_in_thread(reviewer.app) as url:
        yield reviewer, url


@pytest.fixture
async def client(
    database_url: str, gate: tuple[ReviewGate, str]
) -> AsyncIterator[httpx.AsyncClient]:
    async with in_process_site(
        database_url,
        MEDIAJOBS_REVIEW_WEBHOOK_URL=gate[1] + "/",
        MEDIAJOBS_REVIEW_TIMEOUT="30s",
    ) as http:
        policy = {"photoReviewEnabled": True, "photoReviewProvider": "webhook"}
        answer = await http.put("/v1/admin/site-policies", json=policy, headers=ADMIN)
        assert answer.status_code == 200, answer.text
        yield http


async def in_review(client: httpx.AsyncClient, auth: dict[str, str], seed: int) -> str:
    """An upload of the caller's, processed and waiting for its review: its id."""
    item = await upload(client, auth, jpeg(quadrants(600 + seed, 400)))
    assert item["status"] == "in_review", item
    return str(item["id"])


async def status_of(client: httpx.AsyncClient, media_id: str) -> str:
    answer = await client.get(f"/media/{media_id}", headers=ALICE)
    return str(answer.json()["status"])


async def reviewed(client: httpx.AsyncClient, gate: ReviewGate, media_id: str, ok: bool) -> None:
    gate.decide(media_id, ok)
    done = "ready" if ok else "rejected"
    await wait_for(lambda: _is(client, media_id, done), timeout=30)


async def _is(client: httpx.AsyncClient, media_id: str, status: str) -> bool:
    return await status_of(client, media_id) == status


def public_ids(body: dict[str, Any]) -> list[str]:
    return [item["id"] for item in body["items"]]


async def sync(
    client: httpx.AsyncClient,
    items: list[tuple[str, str]],
    *,
    auth: dict[str, str] = ALICE,
    etag: str | None = None,
    path: str = LISTING,
) -> httpx.Response:
    headers = dict(auth) if etag is None else {**auth, "If-Match": etag}
    body = {"items": [{"mediaId": m, "purpose": p} for m, p in items]}
    return await client.put(path, json=body, headers=headers)


async def collection_events(database_url: str, owner: str) -> list[dict[str, Any]]:
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        rows = await (
            await conn.execute(
                "SELECT data::text, job_id FROM job_events WHERE owner_id = %s"
                " AND type = 'collection_updated' ORDER BY id",
                (owner,),
            )
        ).fetchall()
    # The owner's events, never part of a job's own stream (the job is named in the data).
    assert all(job_id is None for _, job_id in rows)
    return [json.loads(data) for data, _ in rows]


async def test_the_review_gate_holds_on_every_public_read_path(
    client: httpx.AsyncClient, gate: tuple[ReviewGate, str], database_url: str
) -> None:
    reviewer, _ = gate
    profile, cover, gallery, rejected = [await in_review(client, ALICE, n) for n in range(4)]
    broken = await upload(client, ALICE, b"not an image at all", filename="x.jpg")
    assert broken["status"] == "failed"
    items = [
        (profile, "profile"),
        (rejected, "cover"),
        (cover, "cover"),
        (broken["id"], "gallery"),
        (gallery, "gallery"),
    ]
    made = await sync(client, items)
    assert made.status_code == 200, made.text
    assert made.headers["etag"] == '"c1"'
    owner = made.json()
    assert [e["media"]["status"] for e in owner["items"]] == [
        "in_review",
        "in_review",
        "in_review",
        "failed",
        "in_review",
    ]
    first = await client.get(PUBLIC)  # no token
    assert first.status_code == 200, first.text
    assert first.json() == {
        "entityType": "listing",
        "entityId": "8412",
        "items": [],
        "profileImage": None,
        "cover": None,
    }
    assert first.headers["cache-control"] == "public, max-age=60"
    etags = [first.headers["etag"]]

    await reviewed(client, reviewer, gallery, True)  # the moment it passes, it shows
    body = (await client.get(PUBLIC)).json()
    assert public_ids(body) == [gallery]
    assert body["cover"]["id"] == gallery and body["profileImage"] is None
    await reviewed(client, reviewer, rejected, False)
    await reviewed(client, reviewer, profile, True)
    await reviewed(client, reviewer, cover, True)
    answer = await client.get(PUBLIC)
    body = answer.json()
    assert public_ids(body) == [profile, cover, gallery]  # never the rejected or failed one
    assert body["profileImage"]["id"] == profile
    assert body["cover"]["id"] == cover  # a cover item beats the first gallery one
    assert answer.headers["etag"] not in etags
    etags.append(answer.headers["etag"])

    # Revalidation: the current ETag is a 304, an old one a 200.
    same = await client.get(PUBLIC, headers={"If-None-Match": answer.headers["etag"]})
    assert (same.status_code, same.content) == (304, b"")
    assert same.headers["etag"] == answer.headers["etag"]
    assert (await client.get(PUBLIC, headers={"If-None-Match": etags[0]})).status_code == 200

    # A deleted item leaves the public read, the cover and the ETag at once ...
    deleted = await client.delete(f"/media/{cover}", headers=ALICE)
    assert deleted.status_code == 202, deleted.text
    answer = await client.get(PUBLIC)
    assert public_ids(answer.json()) == [profile, gallery]
    assert answer.json()["cover"]["id"] == gallery
    assert answer.headers["etag"] not in etags
    # ... and a restore puts it back in its place.
    restored = await client.post("/media/restore", json={"path": cover}, headers=ALICE)
    assert restored.status_code == 200, restored.text
    answer = await client.get(PUBLIC)
    assert public_ids(answer.json()) == [profile, cover, gallery]
    assert answer.headers["etag"] == etags[-1]  # the same content, the same ETag

    reasons = [
        (e["reason"], e.get("mediaId")) for e in await collection_events(database_url, "alice")
    ]
    assert reasons[0] == ("sync", None)
    assert ("review", gallery) in reasons and ("review", rejected) in reasons
    assert ("deleted", cover) in reasons and ("restored", cover) in reasons
    delete_job = deleted.json()["jobId"]
    assert any(e.get("jobId") == delete_job for e in await collection_events(database_url, "alice"))


async def test_a_sync_attaches_detaches_and_reorders_in_one_request_under_if_match(
    client: httpx.AsyncClient, gate: tuple[ReviewGate, str]
) -> None:
    reviewer, _ = gate
    a, b, c = [await in_review(client, ALICE, n) for n in range(3)]
    for media_id in (a, b, c):
        await reviewed(client, reviewer, media_id, True)
    made = await sync(client, [(a, "profile"), (b, "gallery")])
    etag = made.headers["etag"]
    # attach c, detach a, reorder b after c: one request
    changed = await sync(client, [(c, "gallery"), (b, "gallery")], etag=etag)
    assert changed.status_code == 200, changed.text
    assert [(e["mediaId"], e["position"]) for e in changed.json()["items"]] == [(c, 0), (b, 1)]
    assert public_ids((await client.get(PUBLIC)).json()) == [c, b]
    # the same list again is harmless: the version stays
    again = await sync(client, [(c, "gallery"), (b, "gallery")], etag=changed.headers["etag"])
    assert again.headers["etag"] == changed.headers["etag"]
    # two concurrent syncs from one version: exactly one applies, the other is 412
    current = again.headers["etag"]
    results = await asyncio.gather(
        sync(client, [(a, "gallery")], etag=current),
        sync(client, [(b, "profile"), (c, "cover")], etag=current),
    )
    assert sorted(r.status_code for r in results) == [200, 412], [r.text for r in results]
    stale = next(r for r in results if r.status_code == 412)
    assert stale.json()["error"]["code"] == "stale_collection"
    won = next(r for r in results if r.status_code == 200).json()
    owner = await client.get(LISTING, headers=ALICE)
    assert owner.json()["items"] == won["items"]
    assert owner.headers["cache-control"] == "no-store"
    # "c0" creates a collection only if nobody made it meanwhile: exactly one of two applies
    path = "/entities/listing/new-one/media"
    results = await asyncio.gather(
        sync(client, [(a, "gallery")], etag='"c0"', path=path),
        sync(client, [(b, "gallery")], etag='"c0"', path=path),
    )
    assert sorted(r.status_code for r in results) == [200, 412], [r.text for r in results]
    assert (
        await sync(client, [], etag="*", path="/entities/listing/none/media")
    ).status_code == 412
    # a weak or foreign tag never matches; * matches an existing collection
    assert (await sync(client, [], etag=f"W/{owner.headers['etag']}")).status_code == 412
    assert (await sync(client, [(a, "gallery")], etag="*")).status_code == 200

    # another user's media id is 404, a second profile 422, an unknown purpose 422
    theirs = (await upload(client, BOB, jpeg(quadrants(640, 480))))["id"]
    refused = await sync(client, [(theirs, "gallery")])
    assert (refused.status_code, refused.json()["error"]["code"]) == (404, "media_not_found")
    refused = await sync(client, [(a, "profile"), (b, "profile")])
    assert (refused.status_code, refused.json()["error"]["code"]) == (422, "second_profile")
    refused = await sync(client, [(a, "banner")])
    assert (refused.status_code, refused.json()["error"]["code"]) == (422, "invalid_field")
    assert "items[0].purpose" in refused.json()["error"]["message"]
    refused = await sync(client, [(a, "gallery"), (a, "cover")])
    assert (refused.status_code, refused.json()["error"]["code"]) == (422, "duplicate_media")
    # another user's entity is 404 to read and to write; an admin manages it
    assert (await client.get(LISTING, headers=BOB)).status_code == 404
    refused = await sync(client, [(theirs, "gallery")], auth=BOB)
    assert (refused.status_code, refused.json()["error"]["code"]) == (404, "entity_not_found")
    # ... and its If-Match tells another user nothing: 404 whatever the tag
    for tag in ('"c0"', '"c0", "c1", "c2", "c3", "c4", "c5", "c6", "c7", "c8"', "*"):
        refused = await sync(client, [(theirs, "gallery")], auth=BOB, etag=tag)
        assert (refused.status_code, refused.json()["error"]["code"]) == (404, "entity_not_found")
    # an ETag matches only as written; If-Match may come as several header lines
    version = (await client.get(LISTING, headers=ALICE)).json()["version"]
    padded = f'"c0{version}"'
    assert (await sync(client, [(a, "gallery")], etag=padded)).status_code == 412
    lines = [("Authorization", ALICE["Authorization"]), ("If-Match", '"c0"')]
    lines.append(("If-Match", f'"c{version}"'))
    body = {"items": [{"mediaId": a, "purpose": "gallery"}]}
    assert (await client.put(LISTING, json=body, headers=lines)).status_code == 200
    # If-None-Match: * creates only
    create_only = {**ALICE, "If-None-Match": "*"}
    assert (await client.put(LISTING, json=body, headers=create_only)).status_code == 412
    fresh = await client.put("/entities/listing/fresh/media", json=body, headers=create_only)
    assert fresh.status_code == 200, fresh.text
    managed = await sync(client, [(b, "gallery"), (a, "gallery")], auth=ADMIN)
    assert managed.status_code == 200 and managed.json()["ownerId"] == "alice"
    bad = await client.get("/entities/Listing/8412/media", headers=ALICE)
    assert (bad.status_code, bad.json()["error"]["code"]) == (400, "invalid_entity")
    assert (await client.get("/public/entities/listing/nope")).status_code == 404


async def test_a_replacement_keeps_position_and_purpose_and_cuts_over_only_after_review(
    client: httpx.AsyncClient, gate: tuple[ReviewGate, str], database_url: str
) -> None:
    reviewer, _ = gate
    first, old, last = [await in_review(client, ALICE, n) for n in range(3)]
    for media_id in (first, old, last):
        await reviewed(client, reviewer, media_id, True)
    await sync(client, [(first, "gallery"), (old, "profile"), (last, "gallery")])
    before = (await client.get(PUBLIC)).json()
    data = jpeg(quadrants(700, 500))
    init = await client.post(
        "/media/upload/init",
        json={"filename": "new.jpg", "contentType": "image/jpeg", "size": len(data)},
        headers=ALICE,
    )
    signed = init.json()
    assert (
        await client.put(signed["uploadURL"], content=data, headers=signed["headers"])
    ).is_success
    done = await client.post(
        "/media/upload/complete",
        json={"objectPath": signed["objectPath"], "replaces": old},
        headers=ALICE,
    )
    new = done.json()["mediaId"]
    await finished(client, done.json()["jobId"], ALICE)
    assert await status_of(client, new) == "in_review"
    assert (await client.get(PUBLIC)).json() == before  # not before its review passes
    await reviewed(client, reviewer, new, True)
    after = (await client.get(PUBLIC)).json()
    assert public_ids(after) == [first, new, last]
    assert after["profileImage"]["id"] == new and after["items"][1]["purpose"] == "profile"
    owner = (await client.get(LISTING, headers=ALICE)).json()
    assert [(e["mediaId"], e["purpose"]) for e in owner["items"]] == [
        (first, "gallery"),
        (new, "profile"),
        (last, "gallery"),
    ]
    events = await collection_events(database_url, "alice")
    assert events[-1]["reason"] == "replaced" and events[-1]["mediaId"] == new


async def test_a_purge_removes_the_attachment(
    client: httpx.AsyncClient, gate: tuple[ReviewGate, str]
) -> None:
    reviewer, _ = gate
    keep, gone = [await in_review(client, ALICE, n) for n in range(2)]
    for media_id in (keep, gone):
        await reviewed(client, reviewer, media_id, True)
    answer = await client.put(
        "/v1/admin/site-policies", json={"undoWindowSeconds": 0}, headers=ADMIN
    )
    assert answer.status_code == 200, answer.text
    made = await sync(client, [(gone, "gallery"), (keep, "gallery")])
    deleted = await client.delete(f"/media/{gone}", headers=ALICE)
    await finished(client, deleted.json()["jobId"], ALICE)

    async def detached() -> bool:
        owner = (await client.get(LISTING, headers=ALICE)).json()
        return [e["mediaId"] for e in owner["items"]] == [keep]

    await wait_for(detached, timeout=30)
    owner = await client.get(LISTING, headers=ALICE)
    assert owner.headers["etag"] != made.headers["etag"]  # the list changed: a new version


async def test_a_public_read_leaks_nothing_private(
    client: httpx.AsyncClient, gate: tuple[ReviewGate, str]
) -> None:
    reviewer, _ = gate
    data = jpeg(photo(1200, 900), exif=camera_exif(gps=True))
    item = await upload(client, ALICE, data, filename="secret-name.jpg")
    theirs = await upload(client, BOB, jpeg(quadrants(640, 480)))
    reviewer.decide(theirs["id"], True)
    await reviewed(client, reviewer, item["id"], True)
    detail = (await client.get(f"/media/{item['id']}", headers=ALICE)).json()
    assert detail["exif"]["model"] == "EOS R5"  # the owner's view has camera data
    alt = await client.patch(f"/media/{item['id']}", json={"altText": "a red door"}, headers=ALICE)
    assert alt.status_code == 200, alt.text
    await sync(client, [(item["id"], "profile")])
    answer = await client.get(PUBLIC)
    body = answer.json()
    shown = body["items"][0]
    assert set(shown) == {
        "id",
        "src",
        "thumbnailSrc",
        "srcset",
        "blurDataURL",
        "width",
        "height",
        "altText",
        "purpose",
    }
    assert shown["altText"] == "a red door"
    assert re.fullmatch(r"(\S+ \d+w)(, \S+ \d+w)*", shown["srcset"])
    widths = [int(part.rsplit(" ", 1)[1][:-1]) for part in shown["srcset"].split(", ")]
    assert widths == sorted(widths) and shown["width"] == widths[-1]
    urls = [shown["src"], shown["thumbnailSrc"], *re.findall(r"(\S+) \d+w", shown["srcset"])]
    for url in urls:  # each a variant's public URL, never the source or a locator
        assert url.startswith("http") and item["objectPath"] not in url
        assert (await client.get(url)).status_code == 200
    text = answer.text
    for secret in (
        "memory://",  # a locator
        "locator",
        "bucket",
        item["objectPath"],  # the private source
        "secret-name",  # the original filename
        "bob",  # another owner
        theirs["id"],
        "Canon",
        "EOS R5",
        "gps",
        "GPS",
        "exif",
        "owner",
    ):
        assert secret not in text, secret
    without_urls = text
    for url in urls:
        without_urls = without_urls.replace(url, "")
    assert "alice" not in without_urls  # the owner shows only as the key prefix of URLs

    # An edit of a shown item reaches the public read at once (through the process's cache).
    await client.patch(f"/media/{item['id']}", json={"altText": "a blue door"}, headers=ALICE)
    edited = await client.get(PUBLIC, headers={"If-None-Match": answer.headers["etag"]})
    assert edited.status_code == 200 and edited.json()["items"][0]["altText"] == "a blue door"
