"""Bucket sources (ingest/scan.py ``walk_bucket``, ingest/source.py) against moto's S3
server over real HTTP, and against the memory store: one contract for both."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest

from mediajobs.ingest import (
    FileCheck,
    FileState,
    FileTooLarge,
    FileVanished,
    ScanCounts,
    ScannedFile,
    SourceInvalid,
    check_file,
    parse_source,
    read_file,
    scan_source,
    settled,
    stat_file,
    walk_bucket,
)
from mediajobs.ingest.scan import mtime_ns_of
from mediajobs.storage import MemoryStore, Store, StoreRegistry
from mediajobs.storage.s3 import make_client
from tests.support.emulators import s3_store

PROVIDERS = ["memory", "s3"]


@dataclass
class Bucket:
    store: Store
    # Writes a key the Store interface refuses (a folder marker, an empty segment), as
    # another tool writing into the bucket would.
    put_raw: Callable[[str, bytes], Awaitable[None]]


@pytest.fixture(params=PROVIDERS)
async def bucket(request: pytest.FixtureRequest) -> AsyncIterator[Bucket]:
    name = f"src-{uuid.uuid4().hex[:12]}"
    if request.param == "memory":
        memory = MemoryStore("http://127.0.0.1:9/storage", bucket=name)

        async def put_memory(key: str, data: bytes) -> None:
            await memory.put(key, data, "application/octet-stream")

        yield Bucket(memory, put_memory)
        return
    endpoint = request.getfixturevalue("moto_url")
    store = await asyncio.to_thread(s3_store, endpoint, name)
    client = make_client(endpoint_url=endpoint, region="us-east-1", force_path_style=True)

    async def put_s3(key: str, data: bytes) -> None:
        await asyncio.to_thread(client.put_object, Bucket=name, Key=key, Body=data)

    yield Bucket(store, put_s3)
    await store.close()
    client.close()


IMAGES = {
    "lib/a.jpg": b"a" * 10,
    "lib/2020/01/IMG_0001.JPEG": b"b" * 11,
    "lib/2020/01/scan.tiff": b"c" * 12,
    "lib/été/фото.PNG": b"d" * 13,
    "lib/x/y/z/deep.webp": b"e" * 14,
    "lib/phone.HEIC": b"f" * 15,
    "lib/phone2.heif": b"g" * 16,
}
OTHERS = {
    "lib/notes.txt": b"n",
    "lib/2020/clip.mov": b"m",
    "other/outside.jpg": b"o",  # not under the prefix
}


async def fill(bucket: Bucket) -> None:
    for key, data in {**IMAGES, **OTHERS}.items():
        await bucket.store.upload(key, data, "application/octet-stream")
    await bucket.put_raw("lib/2020/", b"")  # a folder marker, as consoles make them
    await bucket.put_raw("lib/bad//name.jpg", b"zz")  # unreadable through a Store


async def test_the_bucket_walk_lists_every_approved_object_under_the_prefix_a_page_at_a_time(
    bucket: Bucket,
):
    await fill(bucket)
    counts = ScanCounts()
    started_ns = time.time_ns()

    found = [file async for file in walk_bucket(bucket.store, "lib/", counts, page_size=2)]

    assert [file.path for file in found] == sorted(key[len("lib/") :] for key in IMAGES)
    assert counts == ScanCounts(files=7, skipped=2, errors=1)
    for file in found:
        info = await bucket.store.head("lib/" + file.path)
        assert info is not None
        assert file.size == len(IMAGES["lib/" + file.path]) == info.size
        assert file.etag == info.etag
        assert file.etag
        # S3's listing and HEAD round last-modified differently; both say "just now".
        assert abs(file.mtime_ns - mtime_ns_of(info.updated_at)) < 1_000_000_000
        assert abs(file.mtime_ns - started_ns) < 600 * 1_000_000_000


async def test_a_bucket_source_is_parsed_scanned_and_read_back_through_its_store(
    bucket: Bucket,
):
    await fill(bucket)
    stores = StoreRegistry(bucket.store)
    provider = bucket.store.provider
    source = parse_source(f"{provider}://{bucket.store.bucket}/lib", stores)
    assert source.uri == f"{provider}://{bucket.store.bucket}/lib/"

    batches = [batch async for batch in scan_source(source, batch_size=3)]

    assert [len(batch.files) for batch in batches if batch.files] == [3, 3, 1]
    assert sum(batch.counts.skipped for batch in batches) == 2
    assert sum(batch.counts.errors for batch in batches) == 1
    for batch in batches:
        for file in batch.files:
            current = await stat_file(source, file.path)
            assert current is not None
            assert settled(file, current, settle_seconds=0.0)
            assert await read_file(source, file, max_bytes=1000) == IMAGES["lib/" + file.path]
            assert source.locator(file.path) == bucket.store.locator("lib/" + file.path)


async def test_a_bucket_object_replaced_since_the_scan_is_read_new_and_a_deleted_one_vanished(
    bucket: Bucket,
):
    await fill(bucket)
    source = parse_source(
        f"{bucket.store.provider}://{bucket.store.bucket}/lib/", StoreRegistry(bucket.store)
    )
    scanned = {f.path: f async for batch in scan_source(source) for f in batch.files}
    await bucket.store.upload("lib/a.jpg", b"A" * 20, "image/jpeg")
    await bucket.store.delete("lib/phone.HEIC")

    check = await check_file(source, scanned["a.jpg"], settle_seconds=3600.0)
    current = check.current
    assert check.state is FileState.STABLE  # objects appear whole: nothing to wait for
    assert current is not None
    assert current.size == 20
    assert current.etag != scanned["a.jpg"].etag
    # Read in its new version; the next scan queues it again under its new ETag.
    assert await read_file(source, scanned["a.jpg"], max_bytes=1000) == b"A" * 20
    assert await stat_file(source, "phone.HEIC") is None
    assert (await check_file(source, scanned["phone.HEIC"], settle_seconds=0.0)) == FileCheck(
        FileState.VANISHED, None
    )
    with pytest.raises(FileVanished):
        await read_file(source, scanned["phone.HEIC"], max_bytes=1000)
    with pytest.raises(FileTooLarge):
        await read_file(source, ScannedFile("a.jpg", 20, current.mtime_ns), max_bytes=19)


async def test_a_bucket_of_another_store_is_refused_naming_the_configured_one(bucket: Bucket):
    stores = StoreRegistry(bucket.store)
    with pytest.raises(SourceInvalid, match="configured: ") as caught:
        parse_source(f"{bucket.store.provider}://not-{bucket.store.bucket}/x", stores)
    assert f"{bucket.store.provider}://{bucket.store.bucket}" in str(caught.value)
