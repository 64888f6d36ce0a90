"""The memory store's HTTP app: presigned PUTs are checked field by field; GETs honour
ETag, Range and Cache-Control; paths cannot escape. Each test runs on the in-process store
and on the development store that keeps its objects in files (LocalStore)."""

from __future__ import annotations

import os
import urllib.parse

import httpx
import pytest

from mediajobs.errors import InvalidKey
from mediajobs.storage import LocalStore, MemoryStore

KEY = "media/u1/uploads/abc/photo.jpg"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["memory", "local"])
def store(request: pytest.FixtureRequest, clock: Clock, tmp_path) -> MemoryStore:
    if request.param == "local":
        return LocalStore("http://testserver/storage", tmp_path / "storage", clock=clock)
    return MemoryStore("http://testserver/storage", clock=clock)


@pytest.fixture
async def http(store: MemoryStore):
    from starlette.applications import Starlette
    from starlette.routing import Mount

    app = Starlette(routes=[Mount("/storage", app=store.app())])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as client:
        yield client


def error_code(reply: httpx.Response) -> str:
    assert reply.headers["content-type"] == "application/json"
    return str(reply.json()["error"]["code"])


async def test_a_presigned_put_within_its_limits_stores_the_object(store, http):
    presigned = await store.presign_upload(KEY, "image/jpeg", 100, expires_in=60)
    reply = await http.put(presigned.url, content=b"x" * 100, headers=presigned.headers)
    assert reply.status_code == 200
    info = await store.head(KEY)
    assert info is not None
    assert (info.size, info.content_type) == (100, "image/jpeg")
    assert reply.headers["etag"] == info.etag


async def test_an_expired_upload_url_is_refused(store, http, clock):
    presigned = await store.presign_upload(KEY, "image/jpeg", 100, expires_in=60)
    clock.now += 61
    reply = await http.put(presigned.url, content=b"x", headers=presigned.headers)
    assert (reply.status_code, error_code(reply)) == (403, "signature_expired")
    assert await store.head(KEY) is None


@pytest.mark.parametrize(
    ("field", "value"),
    [("ct", "image/png"), ("max", "1000000"), ("exp", "9999999999"), ("sig", "0" * 64)],
)
async def test_a_tampered_upload_url_is_refused(store, http, field, value):
    presigned = await store.presign_upload(KEY, "image/jpeg", 100, expires_in=60)
    url, _, query = presigned.url.partition("?")
    params = dict(urllib.parse.parse_qsl(query))
    params[field] = value
    headers = {"Content-Type": params["ct"]}
    reply = await http.put(f"{url}?{urllib.parse.urlencode(params)}", content=b"x", headers=headers)
    assert (reply.status_code, error_code(reply)) == (403, "signature_invalid")
    assert await store.head(KEY) is None


async def test_an_upload_url_is_bound_to_its_key(store, http):
    presigned = await store.presign_upload(KEY, "image/jpeg", 100, expires_in=60)
    other = presigned.url.replace("photo.jpg", "other.jpg")
    reply = await http.put(other, content=b"x", headers=presigned.headers)
    assert (reply.status_code, error_code(reply)) == (403, "signature_invalid")


async def test_an_upload_without_a_signature_is_refused(store, http):
    reply = await http.put(f"/storage/{KEY}", content=b"x", headers={"Content-Type": "image/jpeg"})
    assert (reply.status_code, error_code(reply)) == (403, "signature_missing")


async def test_an_oversize_upload_is_refused_whether_declared_or_streamed(store, http):
    presigned = await store.presign_upload(KEY, "image/jpeg", 100, expires_in=60)
    reply = await http.put(presigned.url, content=b"x" * 101, headers=presigned.headers)
    assert (reply.status_code, error_code(reply)) == (413, "too_large")

    async def body():
        for _ in range(3):
            yield b"x" * 50  # no Content-Length: chunked, counted as it arrives

    reply = await http.put(presigned.url, content=body(), headers=presigned.headers)
    assert (reply.status_code, error_code(reply)) == (413, "too_large")
    assert await store.head(KEY) is None


async def test_an_upload_of_another_type_is_refused(store, http):
    presigned = await store.presign_upload(KEY, "image/jpeg", 100, expires_in=60)
    reply = await http.put(presigned.url, content=b"x", headers={"Content-Type": "text/html"})
    assert (reply.status_code, error_code(reply)) == (415, "content_type_mismatch")
    assert await store.head(KEY) is None


async def test_get_answers_etag_revalidation_ranges_and_cache_control(store, http):
    await store.upload(KEY, b"0123456789", "image/jpeg", cache_control="public, max-age=60")
    full = await http.get(f"/storage/{KEY}")
    assert full.status_code == 200
    assert full.content == b"0123456789"
    assert full.headers["cache-control"] == "public, max-age=60"
    assert full.headers["accept-ranges"] == "bytes"
    etag = full.headers["etag"]
    again = await http.get(f"/storage/{KEY}", headers={"If-None-Match": etag})
    assert (again.status_code, again.content) == (304, b"")
    part = await http.get(f"/storage/{KEY}", headers={"Range": "bytes=2-4"})
    assert (part.status_code, part.content) == (206, b"234")
    assert part.headers["content-range"] == "bytes 2-4/10"
    tail = await http.get(f"/storage/{KEY}", headers={"Range": "bytes=-3"})
    assert (tail.status_code, tail.content) == (206, b"789")
    beyond = await http.get(f"/storage/{KEY}", headers={"Range": "bytes=20-"})
    assert (beyond.status_code, error_code(beyond)) == (416, "range_not_satisfiable")
    head = await http.head(f"/storage/{KEY}")
    assert (head.status_code, head.content, head.headers["content-length"]) == (200, b"", "10")
    missing = await http.get("/storage/media/u1/none.jpg")
    assert (missing.status_code, error_code(missing)) == (404, "object_not_found")


@pytest.mark.parametrize(
    "path",
    [
        "/storage/media/u1/..%2F..%2Fsecret",
        "/storage/media%2Fu1%2Fx",
        "/storage/media/u1/a%5Cb",
        "/storage/media/u1/a%00b",
        "/storage/media/u1/%2e%2e/x",
        "/storage//etc/passwd",
    ],
)
async def test_paths_that_could_escape_are_refused(store, http, path):
    await store.upload("media/u1/x", b"x", "text/plain")
    reply = await http.get(path)
    assert (reply.status_code, error_code(reply)) == (400, "invalid_key")


async def test_deletes_need_a_signature_and_other_methods_are_not_served(store, http, clock):
    await store.upload(KEY, b"x", "text/plain")
    reply = await http.delete(f"/storage/{KEY}")
    assert (reply.status_code, error_code(reply)) == (403, "signature_missing")
    signed = store._signed_url("DELETE", KEY, "", 0, int(clock() + 60))
    forged = signed.replace(KEY, "media/u1/uploads/abc/other.jpg")
    assert (await http.delete(forged)).status_code == 403
    assert (await http.delete(signed)).status_code == 204
    assert await store.head(KEY) is None
    reply = await http.post(f"/storage/{KEY}")
    assert (reply.status_code, error_code(reply)) == (405, "method_not_allowed")


# -- the development store's files ---------------------------------------------------------


async def test_local_objects_survive_a_new_store_on_the_same_directory(tmp_path, clock):
    first = LocalStore("http://testserver/storage", tmp_path / "storage", clock=clock)
    stored = await first.upload(KEY, b"\x89PNG bytes", "image/png", cache_control="max-age=60")
    await first.close()
    again = LocalStore("http://testserver/storage", tmp_path / "storage", clock=clock)
    assert await again.download(KEY) == b"\x89PNG bytes"
    info = await again.head(KEY)
    assert info is not None
    assert (info.key, info.size, info.content_type, info.etag) == (
        KEY,
        10,
        "image/png",
        stored.etag,
    )
    assert info.updated_at is not None and info.updated_at.timestamp() == clock.now
    obj = await again.get(KEY)
    assert obj is not None and obj.cache_control == "max-age=60"
    assert [item.key for item in (await again.list("media/")).items] == [KEY]


async def test_local_keys_that_nest_coexist_and_every_file_stays_inside_the_directory(tmp_path):
    root = tmp_path / "storage"
    store = LocalStore("http://testserver/storage", root)
    keys = ["a", "a/b", "a/b/c", "~2E.~2Fx/..x/" + "n" * 300 + ".jpg"]
    for index, key in enumerate(keys):
        await store.upload(key, bytes([index]) * 3, "application/octet-stream")
    assert [await store.download(key) for key in keys] == [bytes([i]) * 3 for i in range(4)]
    assert sorted(item.key for item in (await store.list()).items) == sorted(keys)
    files = [path for path in tmp_path.rglob("*") if path.is_file()]
    assert len(files) == 4
    assert all(path.resolve().is_relative_to(root.resolve()) for path in files)
    assert not any(path.name.startswith(".tmp-") for path in files)
    for key in ("../escape", "/etc/passwd", "a/../../b", "a\\b"):
        with pytest.raises(InvalidKey):
            await store.upload(key, b"x", "text/plain")
    await store.delete("a/b")
    assert await store.head("a/b") is None
    assert await store.download("a/b/c") == bytes([2]) * 3


async def test_a_local_write_that_fails_keeps_the_previous_object_and_no_temporary_file(
    tmp_path, monkeypatch
):
    store = LocalStore("http://testserver/storage", tmp_path / "storage")
    await store.upload(KEY, b"old", "image/jpeg")

    def broken_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="No space left"):
        await store.upload(KEY, b"new bytes", "image/jpeg")
    monkeypatch.undo()
    assert await store.download(KEY) == b"old"
    assert [p.name for p in tmp_path.rglob(".tmp-*")] == []


async def test_a_local_file_that_is_not_an_object_is_neither_served_nor_listed(tmp_path):
    store = LocalStore("http://testserver/storage", tmp_path / "storage")
    await store.upload(KEY, b"ok", "image/jpeg")
    [path] = [p for p in tmp_path.rglob("*") if p.is_file()]
    (path.parent / "stray").write_bytes(b"not json\nbytes")
    path.write_bytes(b'{"key": "media/other"}\nbytes')  # a file of another key
    assert await store.head(KEY) is None
    assert await store.get(KEY) is None
    assert (await store.list()).items == []


async def test_a_put_keeps_its_cache_control_within_bounds(store, http):
    presigned = await store.presign_upload(KEY, "image/jpeg", 100, expires_in=60)
    plain = await http.put(presigned.url, content=b"x", headers=presigned.headers)
    assert plain.status_code == 200
    assert (await http.get(f"/storage/{KEY}")).headers["cache-control"] == "no-cache"
    headers = {**presigned.headers, "cache-control": "public, no-cache"}
    assert (await http.put(presigned.url, content=b"y", headers=headers)).status_code == 200
    assert (await http.get(f"/storage/{KEY}")).headers["cache-control"] == "public, no-cache"
    long = {**presigned.headers, "cache-control": "max-age=1, " + "x" * 300}
    refused = await http.put(presigned.url, content=b"z", headers=long)
    assert refused.status_code == 400 and error_code(refused) == "invalid_cache_control"
    assert await store.download(KEY) == b"y"
