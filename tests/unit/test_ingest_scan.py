"""The ingest walk (ingest/scan.py) and sources (ingest/source.py) on a real file system
under tmp_path and an unserved MemoryStore: no Postgres, no Redis, no network."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import shutil
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mediajobs.ingest import (
    APPROVED_EXTENSIONS,
    FileChanged,
    FileCheck,
    FileState,
    FileTooLarge,
    FileUnreadable,
    FileVanished,
    ScanCounts,
    ScannedFile,
    Source,
    SourceInvalid,
    batched,
    check_file,
    parse_source,
    read_file,
    scan_source,
    settled,
    stat_file,
    walk_bucket,
    walk_directory,
)
from mediajobs.ingest import source as source_module
from mediajobs.storage import MemoryStore, StoreRegistry

BASE = "http://127.0.0.1:9/storage"  # never served: these stores are used in memory only


def write(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def walk(root: Path) -> tuple[dict[str, ScannedFile], ScanCounts]:
    counts = ScanCounts()
    found = {file.path: file for file in walk_directory(root, counts)}
    return found, counts


# -- walk_directory -----------------------------------------------------------------------


def test_the_walk_yields_approved_files_relative_to_the_root_with_size_and_mtime(tmp_path):
    write(tmp_path / "a.jpg", b"12345")
    write(tmp_path / "deep/er/B.JPEG", b"1")
    write(tmp_path / "deep/Été/фото.Png", b"22")
    write(tmp_path / "deep/x.TiF")
    write(tmp_path / "notes.txt")
    write(tmp_path / "deep/movie.mp4")
    write(tmp_path / "deep/.jpg")  # a hidden file with no extension
    write(tmp_path / "raw.jpg.bak")
    os.utime(tmp_path / "a.jpg", ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))

    found, counts = walk(tmp_path)

    assert sorted(found) == ["a.jpg", "deep/er/B.JPEG", "deep/x.TiF", "deep/Été/фото.Png"]
    assert found["a.jpg"] == ScannedFile("a.jpg", 5, 1_600_000_000_123_456_789, None)
    assert found["deep/Été/фото.Png"].size == 2
    assert (counts.files, counts.skipped, counts.errors) == (4, 4, 0)


def test_every_approved_extension_is_matched_in_any_case(tmp_path):
    for index, extension in enumerate(sorted(APPROVED_EXTENSIONS)):
        write(tmp_path / f"lower{index}{extension}")
        write(tmp_path / f"upper{index}{extension.upper()}")
    found, counts = walk(tmp_path)
    assert len(found) == 2 * len(APPROVED_EXTENSIONS) == 18
    assert counts == ScanCounts(files=18, skipped=0, errors=0)


def test_a_symlink_loop_is_one_counted_and_logged_error_and_the_walk_goes_on(tmp_path, caplog):
    write(tmp_path / "a/one.jpg")
    write(tmp_path / "a/b/two.jpg")
    (tmp_path / "a/b/loop").symlink_to(tmp_path / "a")
    caplog.set_level(logging.WARNING, "mediajobs.ingest.scan")

    found, counts = walk(tmp_path)

    assert sorted(found) == ["a/b/two.jpg", "a/one.jpg"]
    assert counts.errors == 1
    assert "symlink loop" in caplog.text
    assert str(tmp_path / "a/b/loop") in caplog.text


def test_a_path_with_a_line_break_is_logged_json_quoted_on_one_line(tmp_path, caplog):
    write(tmp_path / "a/one.jpg")
    (tmp_path / "a/evil\nWARNING forged").symlink_to(tmp_path / "a")
    caplog.set_level(logging.WARNING, "mediajobs.ingest.scan")

    walk(tmp_path)

    [record] = caplog.records
    line = record.getMessage()
    assert "\n" not in line
    assert json.dumps(str(tmp_path / "a/evil\nWARNING forged")) in line


def test_a_loop_outside_the_root_is_caught_on_entering_it(tmp_path, caplog):
    outside = tmp_path / "outside"
    write(outside / "ext.jpg")
    (outside / "back").symlink_to(outside)  # a loop that never touches the root
    root = tmp_path / "root"
    write(root / "own.jpg")
    (root / "linked").symlink_to(outside)
    caplog.set_level(logging.WARNING, "mediajobs.ingest.scan")

    found, counts = walk(root)

    assert sorted(found) == ["linked/ext.jpg", "own.jpg"]
    assert counts.errors == 1
    assert "symlink loop" in caplog.text


def test_two_links_to_one_folder_outside_the_root_walk_it_once(tmp_path):
    outside = tmp_path / "outside"
    write(outside / "ext.jpg")
    root = tmp_path / "root"
    write(root / "own.jpg")
    (root / "first").symlink_to(outside)
    (root / "second").symlink_to(outside)

    found, counts = walk(root)

    assert len([path for path in found if path.endswith("ext.jpg")]) == 1
    assert "own.jpg" in found and counts.errors == 0


def test_links_inside_the_root_are_aliases_walked_once_under_their_real_path(tmp_path):
    write(tmp_path / "archive/2020/p.jpg")
    (tmp_path / "by-year").mkdir()
    (tmp_path / "by-year/2020").symlink_to(tmp_path / "archive/2020")
    (tmp_path / "best.jpg").symlink_to(tmp_path / "archive/2020/p.jpg")

    found, counts = walk(tmp_path)

    assert sorted(found) == ["archive/2020/p.jpg"]
    assert counts == ScanCounts(files=1, skipped=1, errors=0)  # the file alias is skipped


def test_links_leading_outside_the_root_are_followed(tmp_path):
    write(tmp_path / "outside/dir/in.png", b"abc")
    write(tmp_path / "outside/single.webp", b"abcd")
    root = tmp_path / "root"
    root.mkdir()
    (root / "mounted").symlink_to(tmp_path / "outside/dir")
    (root / "single.webp").symlink_to(tmp_path / "outside/single.webp")

    found, counts = walk(root)

    assert {path: file.size for path, file in found.items()} == {
        "mounted/in.png": 3,
        "single.webp": 4,
    }
    assert counts.errors == 0


def test_a_dangling_symlink_is_an_error_and_a_fifo_is_skipped_without_being_opened(
    tmp_path, caplog
):
    (tmp_path / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    os.mkfifo(tmp_path / "pipe.jpg")  # opening it for reading would block the walk
    write(tmp_path / "real.jpg")
    caplog.set_level(logging.WARNING, "mediajobs.ingest.scan")

    found, counts = walk(tmp_path)

    assert list(found) == ["real.jpg"]
    assert counts == ScanCounts(files=1, skipped=1, errors=1)
    assert "dangling symlink" in caplog.text


def test_a_name_that_is_not_utf8_is_an_error_logged_by_its_bytes(tmp_path, caplog):
    os.close(os.open(os.fsencode(tmp_path) + b"/bad\xff.jpg", os.O_CREAT | os.O_WRONLY))
    os.mkdir(os.fsencode(tmp_path) + b"/dir\xfe")
    os.close(os.open(os.fsencode(tmp_path) + b"/dir\xfe/inside.jpg", os.O_CREAT | os.O_WRONLY))
    write(tmp_path / "good.jpg")
    caplog.set_level(logging.WARNING, "mediajobs.ingest.scan")

    found, counts = walk(tmp_path)

    assert list(found) == ["good.jpg"]
    assert counts.errors == 2  # the file, and the directory (not entered)
    assert "bad\\xff.jpg" in caplog.text
    for path in found:
        path.encode("utf-8")


def test_an_unreadable_directory_is_an_error_and_its_siblings_are_walked(
    tmp_path, monkeypatch, caplog
):
    write(tmp_path / "locked/hidden.jpg")
    write(tmp_path / "open/seen.jpg")
    real_scandir = os.scandir
    locked = str(tmp_path / "locked")

    def scandir(path):  # this suite runs as root, for whom chmod 000 denies nothing
        if os.fspath(path) == locked:
            raise PermissionError(13, "Permission denied", locked)
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    caplog.set_level(logging.WARNING, "mediajobs.ingest.scan")

    found, counts = walk(tmp_path)

    assert list(found) == ["open/seen.jpg"]
    assert counts.errors == 1
    assert f"unreadable directory: {locked} (Permission denied)" in caplog.text


def test_a_file_that_vanishes_between_the_listing_and_its_stat_is_an_error(tmp_path, caplog):
    write(tmp_path / "one.jpg")
    write(tmp_path / "two.jpg")
    caplog.set_level(logging.WARNING, "mediajobs.ingest.scan")
    counts = ScanCounts()
    found = []
    for file in walk_directory(tmp_path, counts):
        found.append(file.path)
        # The directory's listing was read in one go: the other name is still listed.
        other = "two.jpg" if file.path == "one.jpg" else "one.jpg"
        (tmp_path / other).unlink(missing_ok=True)

    assert len(found) == 1
    assert counts == ScanCounts(files=1, skipped=0, errors=1)
    assert "vanished during the scan" in caplog.text


def test_a_missing_root_is_one_error_and_no_files(tmp_path):
    found, counts = walk(tmp_path / "absent")
    assert found == {}
    assert counts == ScanCounts(files=0, skipped=0, errors=1)


def test_a_deep_tree_is_walked_with_at_most_one_directory_open(tmp_path):
    depth = 200
    path = tmp_path
    for level in range(depth):
        path = path / "d"
        write(path / f"{level}.jpg")

    def open_descriptors() -> int:
        return len(os.listdir("/proc/self/fd"))

    baseline = open_descriptors()
    most = 0
    counts = ScanCounts()
    for _file in walk_directory(tmp_path, counts):
        most = max(most, open_descriptors() - baseline)

    assert counts.files == depth
    assert most == 1  # the directory being listed, whatever the depth


@pytest.fixture
def fast_tmp(tmp_path: Path) -> Iterator[Path]:
    """A directory in memory (tmpfs) when the machine has one: creating 100k files there
    takes a fraction of the time it takes on disk."""
    shm = Path("/dev/shm")
    if not shm.is_dir():
        yield tmp_path
        return
    path = Path(tempfile.mkdtemp(prefix="mj-scan-", dir=shm))
    try:
        yield path
    finally:
        shutil.rmtree(path)


@pytest.mark.slow
@pytest.mark.timeout(600)  # tracemalloc slows every allocation of the walk
def test_walking_100k_files_keeps_peak_memory_independent_of_the_tree(fast_tmp):
    for directory in range(100):
        folder = fast_tmp / f"folder-{directory:03d}"
        folder.mkdir()
        for index in range(1000):
            os.close(os.open(folder / f"image-{index:04d}.jpg", os.O_CREAT | os.O_WRONLY))

    tracemalloc.start()
    try:
        counts = ScanCounts()
        total = sum(file.size + 1 for file in walk_directory(fast_tmp, counts))
        _, walk_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        # What a listing would hold, for a tenth of the tree.
        listing = list(itertools.islice(walk_directory(fast_tmp, ScanCounts()), 10_000))
        _, list_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert counts.files == total == 100_000
    assert len(listing) == 10_000
    # The walk holds one directory's entries at most (about 25 kB here); a list of the
    # paths holds every one (about 1.9 MB per 10k), so the bound below is one that a
    # listing of even a tenth of this tree breaks.
    assert walk_peak < 1024 * 1024, walk_peak
    assert list_peak > 1024 * 1024, list_peak


# -- walk_bucket and batches --------------------------------------------------------------


async def test_the_bucket_walk_pages_filters_and_skips_folder_markers():
    stamp = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    store = MemoryStore(BASE, bucket="lib", clock=stamp.timestamp)
    for key in ("p/a.jpg", "p/sub/b.HEIC", "p/sub/marker.txt", "p/readme.md", "p/c.png"):
        await store.upload(key, b"ab", "application/octet-stream")
    await store.upload("other/d.jpg", b"ab", "image/jpeg")  # outside the prefix
    await store.put("p/sub/", b"", "application/x-directory")  # a folder marker
    await store.put("p/bad//e.jpg", b"abc", "image/jpeg")  # a key no store could read back
    counts = ScanCounts()

    found = [file async for file in walk_bucket(store, "p/", counts, page_size=2)]

    assert [file.path for file in found] == ["a.jpg", "c.png", "sub/b.HEIC"]
    assert found[0].mtime_ns == 1_767_323_045_678_901_000
    assert found[0].etag == (await store.head("p/a.jpg")).etag
    assert counts == ScanCounts(files=3, skipped=2, errors=1)


async def test_a_bucket_prefix_without_a_trailing_slash_is_refused():
    with pytest.raises(ValueError, match="ends with '/'"):
        async for _ in walk_bucket(MemoryStore(BASE), "photos", ScanCounts()):
            pass


def test_batched_splits_lazily_and_keeps_the_remainder():
    assert list(batched(range(7), 3)) == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(batched([], 3)) == []
    with pytest.raises(ValueError, match="size"):
        list(batched([1], 0))


async def test_a_directory_scan_comes_in_batches_whose_counts_add_up(tmp_path):
    for index in range(25):
        write(tmp_path / f"d{index % 3}/{index}.jpg")
    write(tmp_path / "zz-last/notes.txt")

    batches = [b async for b in scan_source(Source("file:///x", tmp_path), batch_size=10)]

    assert [len(b.files) for b in batches[:3]] == [10, 10, 5]
    assert [b.counts.files for b in batches] == [len(b.files) for b in batches]
    total = ScanCounts()
    for b in batches:
        total.files += b.counts.files
        total.skipped += b.counts.skipped
        total.errors += b.counts.errors
    assert total == ScanCounts(files=25, skipped=1, errors=0)
    assert len({f.path for b in batches for f in b.files}) == 25


async def test_a_scan_sends_a_batch_once_it_is_old_even_if_not_full(tmp_path):
    for index in range(4):
        write(tmp_path / f"{index}.png")
    batches = [
        b
        async for b in scan_source(Source("file:///x", tmp_path), batch_size=1000, max_seconds=0.0)
    ]
    assert [len(b.files) for b in batches] == [1, 1, 1, 1]


async def test_a_scan_stopped_early_closes_the_directory_it_was_listing(tmp_path):
    for index in range(50):
        write(tmp_path / f"{index}.jpg")
    baseline = len(os.listdir("/proc/self/fd"))

    async with contextlib.aclosing(
        scan_source(Source("file:///x", tmp_path), batch_size=10)
    ) as batches:
        first = await anext(batches)
        assert len(first.files) == 10
        assert len(os.listdir("/proc/self/fd")) == baseline + 1  # mid-directory

    # Closed at once, or (the walk's thread still reading the next batch ahead) as soon
    # as that batch is read.
    for _ in range(200):
        if len(os.listdir("/proc/self/fd")) == baseline:
            break
        await asyncio.sleep(0.01)
    assert len(os.listdir("/proc/self/fd")) == baseline


async def test_the_walk_reads_the_next_batch_while_the_caller_holds_this_one(tmp_path, monkeypatch):
    for index in range(30):
        write(tmp_path / f"{index}.jpg")
    taken: list[int] = []
    take = source_module._take

    def counting_take(*args):
        files, done = take(*args)
        taken.append(len(files))
        return files, done

    monkeypatch.setattr(source_module, "_take", counting_take)
    held = []
    async for batch in scan_source(Source("file:///x", tmp_path), batch_size=10):
        await asyncio.sleep(0.2)  # the caller records the batch meanwhile
        held.append(len(batch.files))
        # The batch after this one was read while the caller held this one.
        assert len(taken) == min(len(held) + 1, 4)
    assert held == [10, 10, 10] and taken == [10, 10, 10, 0]


async def test_a_scan_cancelled_while_the_walk_is_slow_ends_cancelled_and_closes_it(
    tmp_path, monkeypatch
):
    for index in range(40):
        write(tmp_path / f"{index}.jpg")
    baseline = len(os.listdir("/proc/self/fd"))
    take = source_module._take

    def slow_take(walk, size, max_seconds):
        time.sleep(0.3)  # a slow disk: the caller is cancelled while the thread reads
        return take(walk, size, max_seconds)

    monkeypatch.setattr(source_module, "_take", slow_take)

    async def consume() -> None:
        async with contextlib.aclosing(
            scan_source(Source("file:///x", tmp_path), batch_size=10)
        ) as batches:
            async for _ in batches:
                pass

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):  # not "generator already executing"
        await task
    for _ in range(200):  # closed once the thread's read ends
        if len(os.listdir("/proc/self/fd")) == baseline:
            break
        await asyncio.sleep(0.01)
    assert len(os.listdir("/proc/self/fd")) == baseline


async def test_a_bucket_scan_ends_with_the_counts_of_its_tail():
    store = MemoryStore(BASE, bucket="lib")
    await store.upload("a.jpg", b"1", "image/jpeg")
    await store.upload("b.jpg", b"1", "image/jpeg")
    await store.upload("z.txt", b"1", "text/plain")
    source = Source("memory://lib/", store=store, prefix="")

    batches = [b async for b in scan_source(source, batch_size=2)]

    assert [[f.path for f in b.files] for b in batches] == [["a.jpg", "b.jpg"], []]
    assert batches[1].counts == ScanCounts(files=0, skipped=1, errors=0)


# -- parse_source -------------------------------------------------------------------------


def registry() -> StoreRegistry:
    return StoreRegistry(
        MemoryStore(BASE, bucket="media", provider="s3"),
        previous=[
            MemoryStore(BASE, bucket="old", provider="gcs"),
            MemoryStore(BASE, bucket="dev", provider="memory"),
        ],
    )


def test_a_directory_source_is_resolved_and_its_uri_is_canonical(tmp_path, monkeypatch):
    (tmp_path / "lib ré").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "lib ré")
    monkeypatch.chdir(tmp_path)

    source = parse_source("alias/", registry())

    assert source.directory == (tmp_path / "lib ré").resolve()
    assert source.uri == (tmp_path / "lib ré").resolve().as_uri()
    assert "%20" in source.uri
    assert (source.store, source.prefix) == (None, "")
    assert parse_source(source.uri, registry()) == source
    assert source.file_path("a/b.jpg") == source.directory / "a/b.jpg"


@pytest.mark.parametrize("path", ["/abs.jpg", "a/../b.jpg", "a//b.jpg", "./a.jpg", ""])
def test_a_directory_source_refuses_paths_that_could_leave_it(tmp_path, path):
    source = parse_source(str(tmp_path), registry())
    with pytest.raises(ValueError, match="not a relative path"):
        source.file_path(path)
    with pytest.raises(ValueError, match="not a bucket source"):
        source.locator("a.jpg")


def test_a_source_that_is_no_readable_directory_is_refused_with_the_reason(tmp_path):
    write(tmp_path / "file.jpg")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    cases = {
        str(tmp_path / "absent"): "no such directory",
        str(tmp_path / "file.jpg"): "not a directory",
        str(tmp_path / "loop"): "cannot be resolved",
        "   ": "SOURCE is empty",
        "file://elsewhere/dir": "another host",
        "file://": "needs an absolute path",
        "file://localhost": "needs an absolute path",
        f"file://{tmp_path}#2": "no query or fragment",
        f"file://{tmp_path}?x": "no query or fragment",
    }
    for text, reason in cases.items():
        with pytest.raises(SourceInvalid, match=reason) as caught:
            parse_source(text, registry())
        assert caught.value.code == "invalid_source"


@pytest.mark.parametrize(
    ("text", "uri", "prefix", "bucket"),
    [
        ("s3://media/photos/2020", "s3://media/photos/2020/", "photos/2020/", "media"),
        ("S3://media/photos/", "s3://media/photos/", "photos/", "media"),
        ("s3://media", "s3://media/", "", "media"),
        ("gs://old/x", "gcs://old/x/", "x/", "old"),
        ("gcs://old/x", "gcs://old/x/", "x/", "old"),
        ("memory://dev/", "memory://dev/", "", "dev"),
    ],
)
def test_a_bucket_source_finds_its_store_by_provider_and_bucket(text, uri, prefix, bucket):
    stores = registry()
    source = parse_source(text, stores)
    assert (source.uri, source.prefix, source.directory) == (uri, prefix, None)
    assert source.store is not None
    assert source.store.bucket == bucket
    assert parse_source(source.uri, stores) == source
    assert str(source.locator("a/b.jpg")) == f"{uri}a/b.jpg"
    with pytest.raises(ValueError, match="not a directory source"):
        source.file_path("a.jpg")


def test_a_bucket_no_store_serves_is_refused_naming_the_configured_ones():
    with pytest.raises(SourceInvalid) as caught:
        parse_source("s3://elsewhere/photos", registry())
    assert str(caught.value) == (
        "s3://elsewhere/photos: no configured store serves s3://elsewhere "
        "(configured: gcs://old, memory://dev, s3://media)"
    )
    with pytest.raises(SourceInvalid, match="no bucket name"):
        parse_source("s3:///photos", registry())
    with pytest.raises(SourceInvalid, match="cannot be a key prefix"):
        parse_source("s3://media/a/../b", registry())


# -- stat_file, settled, read_file ---------------------------------------------------------


def test_settled_needs_the_same_size_mtime_and_etag_and_an_mtime_away_from_now():
    row = ScannedFile("a.jpg", 10, 1_000 * 10**9)
    now = 1_005 * 10**9
    assert settled(row, ScannedFile("a.jpg", 10, 1_000 * 10**9), settle_seconds=2, now_ns=now)
    assert not settled(row, ScannedFile("a.jpg", 11, 1_000 * 10**9), settle_seconds=2, now_ns=now)
    assert not settled(row, ScannedFile("a.jpg", 10, 1_001 * 10**9), settle_seconds=2, now_ns=now)
    assert not settled(
        row, ScannedFile("a.jpg", 10, 1_000 * 10**9, '"e2"'), settle_seconds=2, now_ns=now
    )
    # written a second ago: still settling
    assert not settled(row, row, settle_seconds=2, now_ns=1_001 * 10**9)
    # an mtime a day in the future is no write in progress (a camera's wrong clock)
    assert settled(row, row, settle_seconds=2, now_ns=(1_000 - 86_400) * 10**9)


async def test_a_file_being_written_is_seen_changed_then_settles(tmp_path):
    path = write(tmp_path / "growing.jpg", b"a" * 100)
    source = parse_source(str(tmp_path), registry())
    (scanned,) = [f async for b in scan_source(source) for f in b.files]
    with path.open("ab") as out:
        out.write(b"b" * 50)

    current = await stat_file(source, "growing.jpg")

    assert current is not None
    assert current.size == 150
    assert not settled(scanned, current, settle_seconds=2.0)
    with pytest.raises(FileChanged) as caught:
        await read_file(source, scanned, max_bytes=1000)
    assert (caught.value.size, caught.value.code) == (150, "file_changed")
    # Once its mtime is older than the settle time, the new state is stable and readable.
    old = time.time_ns() - 10 * 10**9
    os.utime(path, ns=(old, old))
    current = await stat_file(source, "growing.jpg")
    assert current is not None
    assert settled(current, current, settle_seconds=2.0)
    assert await read_file(source, current, max_bytes=1000) == b"a" * 100 + b"b" * 50


async def test_reading_a_directory_source_file_checks_it_is_what_the_scan_saw(tmp_path):
    write(tmp_path / "big.jpg", b"x" * 2000)
    write(tmp_path / "ok.jpg", b"jpeg")
    (tmp_path / "dir.jpg").mkdir()
    os.mkfifo(tmp_path / "pipe.jpg")
    source = parse_source(str(tmp_path), registry())
    ok = await stat_file(source, "ok.jpg")
    big = await stat_file(source, "big.jpg")
    assert ok is not None
    assert big is not None

    assert await read_file(source, ok, max_bytes=4) == b"jpeg"
    with pytest.raises(FileTooLarge) as too_large:
        await read_file(source, big, max_bytes=1999)
    assert too_large.value.code == "file_too_large"
    with pytest.raises(FileVanished):
        await read_file(source, ScannedFile("gone.jpg", 1, 1), max_bytes=10)
    with pytest.raises(FileChanged):  # same size, another mtime: replaced since the scan
        await read_file(source, ScannedFile("ok.jpg", 4, ok.mtime_ns - 1), max_bytes=10)
    for name in ("dir.jpg", "pipe.jpg"):  # the fifo is opened without waiting for a writer
        with pytest.raises(FileUnreadable, match="not a regular file"):
            await read_file(source, ScannedFile(name, 0, 0), max_bytes=10)
        with pytest.raises(FileUnreadable, match="not a regular file"):
            await stat_file(source, name)
    assert await stat_file(source, "gone.jpg") is None


async def test_a_file_that_grew_past_its_recorded_size_during_the_read_is_changed(
    tmp_path, monkeypatch
):
    path = write(tmp_path / "a.jpg", b"12345")
    source = parse_source(str(tmp_path), registry())
    scanned = await stat_file(source, "a.jpg")
    assert scanned is not None
    real_read = os.read

    def read(fd: int, size: int) -> bytes:  # the writer appends between fstat and read
        if not path.read_bytes().endswith(b"6"):
            with path.open("ab") as out:
                out.write(b"6")
        return real_read(fd, size)

    monkeypatch.setattr(os, "read", read)
    with pytest.raises(FileChanged) as caught:
        await read_file(source, scanned, max_bytes=100)
    assert caught.value.size == 6


async def test_reading_a_bucket_source_file_from_the_memory_store():
    stores = registry()
    store = stores.resolve(parse_source("memory://dev/", stores).locator("x"))
    await store.upload("in/a.jpg", b"abc", "image/jpeg")
    source = parse_source("memory://dev/in", stores)

    current = await stat_file(source, "a.jpg")

    assert current is not None
    assert (current.path, current.size, current.etag) == (
        "a.jpg",
        3,
        (await store.head("in/a.jpg")).etag,
    )
    assert await read_file(source, current, max_bytes=3) == b"abc"
    with pytest.raises(FileTooLarge):
        await read_file(source, current, max_bytes=2)
    # An object replaced since the scan is read as it is now: objects are written whole.
    assert await read_file(source, ScannedFile("a.jpg", 4, 0, '"old"'), max_bytes=10) == b"abc"
    with pytest.raises(FileVanished):
        await read_file(source, ScannedFile("b.jpg", 1, 0), max_bytes=10)
    assert await stat_file(source, "b.jpg") is None


async def test_a_directory_file_is_checked_stable_only_once_it_stops_changing(tmp_path):
    path = write(tmp_path / "a.jpg", b"12345")
    source = parse_source(str(tmp_path), registry())
    row = await stat_file(source, "a.jpg")
    assert row is not None

    fresh = await check_file(source, row, settle_seconds=60.0)
    assert (fresh.state, fresh.current) == (FileState.CHANGED, row)  # written just now
    assert await check_file(
        source, row, settle_seconds=60.0, now_ns=row.mtime_ns + 61 * 10**9
    ) == FileCheck(FileState.STABLE, row)

    path.write_bytes(b"123456")
    grown = await check_file(source, row, settle_seconds=0.0)
    assert grown.state is FileState.CHANGED
    assert grown.current is not None
    assert grown.current.size == 6

    path.unlink()
    assert await check_file(source, row, settle_seconds=0.0) == FileCheck(FileState.VANISHED, None)


async def test_a_bucket_object_needs_no_settling_even_when_replaced():
    store = MemoryStore(BASE, bucket="lib", clock=time.time)
    await store.upload("a.jpg", b"abc", "image/jpeg")
    source = Source("memory://lib/", store=store, prefix="")
    row = ScannedFile("a.jpg", 2, 0, '"an older etag"')

    check = await check_file(source, row, settle_seconds=3600.0)

    assert check.state is FileState.STABLE
    assert check.current is not None
    assert check.current.size == 3
    await store.delete("a.jpg")
    assert (await check_file(source, row, settle_seconds=0.0)).state is FileState.VANISHED
