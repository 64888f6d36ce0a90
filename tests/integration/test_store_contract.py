"""One contract for every Store: memory and local (its file-backed form), both served by
uvicorn, S3 (moto's server) and GCS (gcp-storage-emulator), each over real HTTP on loopback."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import tracemalloc
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from mediajobs.errors import InvalidKey, ObjectNotFound, StoreNotConfigured
from mediajobs.storage import LocalStore, Locator, MemoryStore, Store, StoreRegistry
from mediajobs.storage.gcs import GCSStore
from mediajobs.storage.gcs import make_client as make_gcs_client
from mediajobs.storage.keys import upload_key, user_prefix
from mediajobs.storage.s3 import S3Store
from tests.conftest import free_port
from tests.support.emulators import (
    gcs_emulator,
    s3_store,
    service_account_json,
)
from tests.support.http import serve_in_thread

PROVIDERS = ["memory", "local", "s3", "gcs"]


@pytest.fixture(scope="module")
def gcs_host() -> Iterator[str]:
    with gcs_emulator() as host:
        yield host


@pytest.fixture(scope="module")
def signer_json() -> str:
    return service_account_json()


def gcs_store(host: str, bucket: str, signer_json: str) -> GCSStore:
    client, signer = make_gcs_client(service_account_json=signer_json, emulator_host=host)
    client.create_bucket(bucket)
    return GCSStore(client, bucket, signer=signer, signed_url_endpoint=f"http://{host}")


@pytest.fixture(params=PROVIDERS)
async def store(request: pytest.FixtureRequest, tmp_path) -> AsyncIterator[Store]:
    bucket = f"b-{uuid.uuid4().hex[:12]}"
    if request.param in ("memory", "local"):
        port = free_port()
        base = f"http://127.0.0.1:{port}/storage"
        memory = (
            LocalStore(base, tmp_path / "storage")
            if request.param == "local"
            else MemoryStore(base)
        )
        with serve_in_thread(Starlette(routes=[Mount("/storage", app=memory.app())]), port):
            yield memory
        return
    if request.param == "s3":
        made: Store = await asyncio.to_thread(s3_store, request.getfixturevalue("moto_url"), bucket)
    else:
        made = await asyncio.to_thread(
            gcs_store,
            request.getfixturevalue("gcs_host"),
            bucket,
            request.getfixturevalue("signer_json"),
        )
    yield made
    await made.close()


async def chunks(total: int, size: int = 1024 * 1024) -> AsyncIterator[bytes]:
    """``total`` deterministic bytes, ``size`` at a time, never all in memory."""
    for index in range(0, total, size):
        block = hashlib.sha256(str(index).encode()).digest()
        yield (block * (size // len(block) + 1))[: min(size, total - index)]


async def test_round_trip_through_upload_head_download_open_and_url(store: Store):
    key = "media/u1/images/m1/thumb.webp"
    stored = await store.upload(key, b"RIFF....WEBP", "image/webp", cache_control="max-age=60")
    assert stored.locator == store.locator(key)
    assert (stored.size, stored.content_type) == (12, "image/webp")
    info = await store.head(key)
    assert info is not None
    assert (info.key, info.size, info.content_type) == (key, 12, "image/webp")
    assert info.etag
    assert await store.download(key) == b"RIFF....WEBP"
    assert b"".join([c async for c in store.open(key, chunk_size=5)]) == b"RIFF....WEBP"
    url = await store.url(key)
    assert "/" + key.split("/", 1)[0] in url or "media" in url
    async with httpx.AsyncClient() as http:
        fetched = await http.get(url)
    assert fetched.status_code == 200, fetched.text
    assert fetched.content == b"RIFF....WEBP"


async def test_a_presigned_upload_is_performed_with_a_real_http_request(store: Store):
    key = f"media/u1/uploads/{uuid.uuid4()}/photo.jpg"
    presigned = await store.presign_upload(key, "image/jpeg", max_bytes=1000, expires_in=300)
    assert presigned.locator == store.locator(key)
    assert presigned.expires_at is not None
    body = b"\xff\xd8\xff" + b"j" * 200
    async with httpx.AsyncClient() as http:
        if presigned.method == "POST":
            reply = await http.post(
                presigned.url,
                data=presigned.fields,
                files={"file": ("photo.jpg", body, "image/jpeg")},
            )
        else:
            assert presigned.method == "PUT"
            reply = await http.put(presigned.url, content=body, headers=presigned.headers)
    assert reply.status_code in (200, 201, 204), reply.text
    info = await store.head(key)
    assert info is not None
    assert (info.size, info.content_type) == (len(body), "image/jpeg")
    assert await store.download(key) == body


async def test_list_filters_by_prefix_and_pages_in_key_order(store: Store):
    for name in ("e", "a", "c", "b", "d"):
        await store.upload(f"media/u1/images/{name}.png", name.encode(), "image/png")
    await store.upload("media/u2/images/x.png", b"x", "image/png")
    await store.upload("media/u10/images/y.png", b"y", "image/png")
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = await store.list("media/u1/", cursor=cursor, limit=2)
        pages += 1
        assert len(page.items) <= 2
        seen += [item.key for item in page.items]
        if page.cursor is None:
            break
        cursor = page.cursor
    assert seen == [f"media/u1/images/{n}.png" for n in "abcde"]
    assert pages == 3
    first = await store.list("media/u1/images/a")
    assert [(i.key, i.size) for i in first.items] == [("media/u1/images/a.png", 1)]


async def test_delete_is_idempotent_and_missing_keys_read_as_missing(store: Store):
    key = "media/u1/images/gone.png"
    await store.upload(key, b"bytes", "image/png")
    await store.delete(key)
    await store.delete(key)
    await store.delete("media/u1/images/never-was.png")
    assert await store.head(key) is None
    with pytest.raises(ObjectNotFound):
        await store.download(key)
    with pytest.raises(ObjectNotFound):
        async for _ in store.open(key):
            pass


async def test_unicode_names_survive_the_round_trip(store: Store):
    key = "media/u1/uploads/0d9c/fotografía_日本の夏_Ωmega.jpg"
    await store.upload(key, "ü".encode(), "image/jpeg")
    assert await store.download(key) == "ü".encode()
    listed = await store.list("media/u1/uploads/0d9c/")
    assert [item.key for item in listed.items] == [key]
    async with httpx.AsyncClient() as http:
        fetched = await http.get(await store.url(key))
    assert (fetched.status_code, fetched.content) == (200, "ü".encode())


@pytest.mark.parametrize(
    "key",
    ["../etc/passwd", "/etc/passwd", "media/../../x", "media/./x", "media//x", "media\\x",
     "media/x\x00", "", "media/" + "x" * 1100],
)  # fmt: skip
async def test_keys_that_could_escape_are_refused_before_any_io(store: Store, key: str):
    with pytest.raises(InvalidKey):
        await store.upload(key, b"x", "text/plain")
    with pytest.raises(InvalidKey):
        await store.head(key)
    with pytest.raises(InvalidKey):
        await store.delete(key)
    with pytest.raises(InvalidKey):
        await store.presign_upload(key, "text/plain", 10)
    with pytest.raises(InvalidKey):
        await store.url(key)


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_a_50_mb_object_streams_both_ways_without_being_held_whole(store: Store):
    total = 50 * 1024 * 1024
    expected = hashlib.sha256()
    async for chunk in chunks(total):
        expected.update(chunk)
    key = "media/u1/videos/big_0.mp4"
    tracemalloc.start()
    try:
        stored = await store.upload(key, chunks(total), "video/mp4")
        upload_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        got = hashlib.sha256()
        size = 0
        async for chunk in store.open(key):
            got.update(chunk)
            size += len(chunk)
        download_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert stored.size == total
    assert (size, got.hexdigest()) == (total, expected.hexdigest())
    if isinstance(store, MemoryStore):
        return  # the memory store (and its file-backed form) holds a whole object in memory
    limit = 30 * 1024 * 1024  # a part or chunk in flight, a few buffers: far from 50 MB
    assert upload_peak < limit, f"upload peaked at {upload_peak / 2**20:.1f} MiB"
    assert download_peak < limit, f"download peaked at {download_peak / 2**20:.1f} MiB"


async def test_objects_stay_readable_and_deletable_after_the_active_provider_switches(
    moto_url, gcs_host, signer_json
):
    """Written under Lightsail (S3 API), then the deployment moves to GCS: old locators
    still resolve to Lightsail, new writes go to GCS."""
    lightsail = await asyncio.to_thread(s3_store, moto_url, "old-bucket", provider="lightsail")
    gcs = await asyncio.to_thread(gcs_store, gcs_host, f"new-{uuid.uuid4().hex[:8]}", signer_json)
    before = StoreRegistry(lightsail)
    old = before.locate("media/u1/images/m1/thumb.webp")
    await before.active.upload(old.key, b"old bytes", "image/webp")
    assert (old.provider, old.bucket) == ("lightsail", "old-bucket")

    after = StoreRegistry(gcs, previous=[lightsail])
    new = after.locate("media/u1/images/m2/thumb.webp")
    await after.active.upload(new.key, b"new bytes", "image/webp")
    assert new.provider == "gcs"
    assert await after.download(old) == b"old bytes"
    assert await after.download(new) == b"new bytes"
    async with httpx.AsyncClient() as http:
        assert (await http.get(await after.url(old))).content == b"old bytes"
    assert await gcs.head(old.key) is None  # the old object was never copied

    await after.delete(old)
    assert await lightsail.head(old.key) is None
    assert await after.head(old) is None
    with pytest.raises(StoreNotConfigured):
        await after.download(Locator("azure", "gone", "media/u1/x"))
    await after.close()


async def test_s3_presigned_posts_bind_size_and_type_in_the_signed_policy(moto_url):
    """moto accepts any POST policy, so the limits are checked in the policy itself; S3
    and Lightsail enforce them (docs/operations.md)."""
    store = await asyncio.to_thread(s3_store, moto_url, f"p-{uuid.uuid4().hex[:8]}")
    presigned = await store.presign_upload("media/u1/uploads/x/a.jpg", "image/jpeg", 5000, 120)
    policy = json.loads(base64.b64decode(presigned.fields["policy"]))
    assert ["content-length-range", 0, 5000] in policy["conditions"]
    assert {"Content-Type": "image/jpeg"} in policy["conditions"]
    assert {"key": "media/u1/uploads/x/a.jpg"} in policy["conditions"]
    assert presigned.fields["x-amz-algorithm"] == "AWS4-HMAC-SHA256"
    assert presigned.fields["x-amz-signature"]
    expires = datetime.fromisoformat(policy["expiration"].replace("Z", "+00:00"))
    assert 0 < (expires - datetime.now(UTC)).total_seconds() <= 121


async def test_gcs_signed_uploads_bind_size_and_type_in_the_signed_headers(gcs_host, signer_json):
    """The emulator does not check signatures; GCS does, over the signed headers."""
    store = await asyncio.to_thread(gcs_store, gcs_host, f"p-{uuid.uuid4().hex[:8]}", signer_json)
    presigned = await store.presign_upload("media/u1/uploads/x/a.jpg", "image/jpeg", 5000, 120)
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(presigned.url).query)
    assert query["X-Goog-Algorithm"] == ["GOOG4-RSA-SHA256"]
    assert query["X-Goog-Expires"] == ["120"]
    signed = query["X-Goog-SignedHeaders"][0].split(";")
    assert {"content-type", "host", "x-goog-content-length-range"} <= set(signed)
    assert presigned.headers == {
        "Content-Type": "image/jpeg",
        "x-goog-content-length-range": "0,5000",
    }
    assert len(query["X-Goog-Signature"][0]) == 512  # RSA-2048 signature, hex


async def test_s3_presigned_put_and_public_base_urls(moto_url):
    store = await asyncio.to_thread(s3_store, moto_url, f"u-{uuid.uuid4().hex[:8]}")
    put_store = S3Store(store._client, store.bucket, upload_method="PUT")
    key = "media/u1/uploads/x/a b.jpg"
    presigned = await put_store.presign_upload(key, "image/jpeg", 1000, expires_in=60)
    assert (presigned.method, presigned.headers) == ("PUT", {"Content-Type": "image/jpeg"})
    async with httpx.AsyncClient() as http:
        reply = await http.put(presigned.url, content=b"jpeg", headers=presigned.headers)
    assert reply.status_code == 200, reply.text
    info = await store.head(key)
    assert info is not None
    assert (info.size, info.content_type) == (4, "image/jpeg")
    public = S3Store(store._client, store.bucket, public_base_url="https://cdn.example.com/")
    assert await public.url(key) == "https://cdn.example.com/media/u1/uploads/x/a%20b.jpg"


@pytest.mark.parametrize(
    ("sub", "filename"),
    [("auth0|5f7c8ec7", "🌅.jpg"), ("ann+x@example.com", "—.png"), ("ü/../" * 30, "Été 1.HEIC")],
)
async def test_keys_of_every_owner_and_name_work_in_every_store(
    store: Store, sub: str, filename: str
) -> None:
    """Escaped and hashed owner segments (``~``) and sanitized names upload presigned, list
    under their owner's prefix, and are served, in every store."""
    key = upload_key(sub, filename)
    presigned = await store.presign_upload(key, "image/jpeg", max_bytes=1000, expires_in=300)
    body = b"\xff\xd8\xff" + b"k" * 100
    async with httpx.AsyncClient() as http:
        if presigned.method == "POST":
            files = {"file": ("upload", body, "image/jpeg")}
            reply = await http.post(presigned.url, data=presigned.fields, files=files)
        else:
            reply = await http.put(presigned.url, content=body, headers=presigned.headers)
        assert reply.status_code in (200, 201, 204), reply.text
        listed = await store.list(user_prefix(sub))
        assert [item.key for item in listed.items] == [key]
        fetched = await http.get(await store.url(key))
    assert (fetched.status_code, fetched.content) == (200, body)
    await store.delete(key)
    assert await store.head(key) is None
