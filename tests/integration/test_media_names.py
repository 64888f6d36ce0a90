"""Owners and names through the app and a worker in process: every identity-provider `sub`
uploads, processes, is listed, deleted and restored by path, and sees only its own media;
the bytes decide an upload's type; a name the key cannot hold is kept for display."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from mediajobs.storage.keys import owner_segment
from tests.support.images import encode, jpeg, quadrants
from tests.support.sse import bearer
from tests.support.uploads import upload

pytestmark = pytest.mark.timeout(240)

HARDENING = Path(__file__).resolve().parent.parent / "data" / "hardening"

SUBS = [
    "auth0|5f7c8ec7",
    "google-oauth2|1234",
    "ann.lee+photos@example.com",
    "x" * 150,
    "日本のユーザー🙂",
    "../../bob/..",
    "a/b",
    "Case|User",
    "case|user",
    "a|b",  # escapes to a~7Cb ...
    "a~7Cb",  # ... which escapes to a~7E7Cb
    "a_b",  # what a naive sanitiser would make of a|b
]


async def test_every_identity_provider_sub_uploads_and_sees_only_its_own_media(
    client: httpx.AsyncClient,
) -> None:
    auths = {sub: bearer(sub) for sub in SUBS}
    items = dict(
        zip(
            SUBS,
            await asyncio.gather(
                *(upload(client, auths[sub], jpeg(quadrants(640, 480))) for sub in SUBS)
            ),
            strict=True,
        )
    )
    for sub, item in items.items():
        assert item["job"]["state"] == "succeeded", (sub, item["job"])
        assert item["status"] == "ready" and item["filename"] == "a.jpg"
        assert item["path"] == item["objectPath"]
        assert item["path"].startswith(f"media/{owner_segment(sub)}/uploads/")
        for variant in item["variants"].values():
            assert (await client.get(variant["url"])).status_code == 200
    # Each sub has its own prefix: none is another's.
    prefixes = {item["path"].split("/")[1] for item in items.values()}
    assert len(prefixes) == len(SUBS)

    for sub, item in items.items():
        auth = auths[sub]
        listed = (await client.get("/media", headers=auth)).json()["items"]
        assert [i["id"] for i in listed] == [item["id"]], sub
        folder = await client.get("/media?prefix=uploads/", headers=auth)
        assert [i["id"] for i in folder.json()["items"]] == [item["id"]], sub
        # Every other user's item is a 404 for this one, by id and by path.
        for other, theirs in items.items():
            if other == sub:
                continue
            for response in (
                await client.get(f"/media/{theirs['id']}", headers=auth),
                await client.delete(f"/media/{theirs['path']}", headers=auth),
                await client.post("/media/restore", json={"path": theirs["path"]}, headers=auth),
            ):
                assert response.status_code == 404, (sub, other, response.text)

    for sub, item in items.items():
        auth = auths[sub]
        deleted = await client.delete(f"/media/{item['path']}", headers=auth)
        assert deleted.status_code == 202, (sub, deleted.text)
        assert deleted.json()["mediaId"] == item["id"]
        assert (await client.get("/media", headers=auth)).json()["items"] == []
        restored = await client.post("/media/restore", json={"path": item["path"]}, headers=auth)
        assert restored.status_code == 200, (sub, restored.text)
        assert restored.json()["id"] == item["id"] and restored.json()["status"] == "ready"
    for sub, item in items.items():  # the others' deletes and restores changed nothing here
        listed = (await client.get("/media", headers=auths[sub])).json()["items"]
        assert [i["id"] for i in listed] == [item["id"]], sub


async def test_the_bytes_decide_the_type_and_the_file_name_follows_them(
    client: httpx.AsyncClient,
) -> None:
    auth = bearer("carol")
    mislabelled = (HARDENING / "jpeg-bytes-named-IMG_0001.HEIC").read_bytes()
    for declared in ("image/jpeg", "image/heic", None):
        item = await upload(client, auth, mislabelled, "IMG_0001.HEIC", declared)
        assert item["job"]["state"] == "succeeded", item["job"]
        assert (item["status"], item["detectedType"]) == ("ready", "image/jpeg")
        assert item["filename"] == "IMG_0001.jpg"
        # The object keeps the key it was uploaded under: it is the item's path.
        assert item["path"].endswith("/IMG_0001.HEIC")
        assert item["job"]["result"]["detectedType"] == "image/jpeg"
    png = encode(quadrants(640, 480), "PNG")
    item = await upload(client, auth, png, "party.gif", "image/gif")
    assert (item["status"], item["detectedType"], item["filename"]) == (
        "ready",
        "image/png",
        "party.png",
    )
    gif = await upload(client, auth, encode(quadrants(640, 480), "GIF"), "real.gif", None)
    assert gif["job"]["state"] == "failed"
    assert gif["job"]["error"]["code"] == "unsupported_type"
    assert (gif["status"], gif["error"]["code"]) == ("failed", "unsupported_type")
    text = await upload(client, auth, b"<html>not an image</html>" * 40, "x.jpg", "image/jpeg")
    assert text["job"]["error"]["code"] == "unsupported_type"

    # init has no bytes: it refuses only types it would bind onto the object unsafely.
    for bad in ("text/html", "image/svg+xml", "application/pdf", "image/x+xml"):
        refused = await client.post(
            "/media/upload/init",
            json={"filename": "a.jpg", "contentType": bad, "size": 10},
            headers=auth,
        )
        assert refused.status_code == 415, (bad, refused.text)
        assert refused.json()["error"]["code"] == "unsupported_type"


async def test_names_the_key_cannot_hold_are_kept_for_display(client: httpx.AsyncClient) -> None:
    auth = bearer("dana")
    emoji = (HARDENING / "emoji-name.jpg").read_bytes()
    item = await upload(client, auth, emoji, "🌅.jpg")
    assert item["status"] == "ready"
    assert item["filename"] == "🌅.jpg"
    assert item["path"].endswith("/file.jpg")
    cases = {
        "—.png": ("—.jpg", "file.png"),  # JPEG bytes: the display name follows the bytes
        ".jpg": (".jpg", "file.jpg"),
        "🙂.HEIC": ("🙂.jpg", "file.HEIC"),
        "Été à Nice — 2024 (1).jpg": ("Été à Nice — 2024 (1).jpg", "Été_à_Nice_2024_1.jpg"),
        "…___...jpg": ("…___...jpg", "file.jpg"),
    }
    data = jpeg(quadrants(640, 480))
    for given, (shown, key_name) in cases.items():
        item = await upload(client, auth, data, given, None)
        assert item["status"] == "ready", (given, item["job"])
        assert (item["filename"], item["path"].rsplit("/", 1)[1]) == (shown, key_name), given
    listed = (await client.get("/media", headers=auth)).json()["items"]
    assert {i["filename"] for i in listed} == {"🌅.jpg"} | {s for s, _ in cases.values()}
