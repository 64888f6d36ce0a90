"""An ingest source -- a directory or a bucket prefix -- and reading its files.

``parse_source`` turns what a person typed (``/mnt/library``, ``s3://bucket/photos``,
``gs://bucket``, or any ``{provider}://bucket/prefix`` of a configured store) into a
``Source`` whose ``uri`` is canonical: the same tree always has the same uri, so the
checkpoint knows its files whichever way it was named. ``scan_source`` walks a source in
batches for the scan job; ``check_file`` (``stat_file`` + ``settled``) and ``read_file``
are what a batch needs to decide that a file is complete and read it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import time
import urllib.parse
from collections.abc import AsyncGenerator, Generator, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from mediajobs.db.ingest import ScannedLike
from mediajobs.errors import InvalidKey, MediaJobsError, ObjectNotFound
from mediajobs.ingest.scan import ScanCounts, ScannedFile, mtime_ns_of, walk_bucket, walk_directory
from mediajobs.storage.base import Locator, Store
from mediajobs.storage.keys import validate_key, validate_prefix
from mediajobs.storage.registry import StoreRegistry

SCAN_BATCH_SIZE = 10_000  # paths per scan batch: issue 16's "batches of ~10k paths"
SCAN_BATCH_SECONDS = 2.0  # a batch is sent once this old even if not full, so the first
# images are queued seconds after the start whatever the tree's size (issue 16)

# URL schemes that name a provider other than themselves.
_SCHEME_PROVIDERS = {"gs": "gcs"}


class SourceInvalid(MediaJobsError):
    """SOURCE is neither a readable directory nor a bucket prefix of a configured store;
    the message names the problem."""

    code = "invalid_source"


class SourceFileError(MediaJobsError):
    """One file of a source could not be read as it was scanned; ``code`` is stable."""

    code = "source_file_error"

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


class FileChanged(SourceFileError):
    """The file's size or mtime is no longer what the scan recorded (still being written, or
    replaced): defer it. ``size``/``mtime_ns`` are the values now seen."""

    code = "file_changed"

    def __init__(self, path: str, size: int, mtime_ns: int) -> None:
        super().__init__(path, f"changed since the scan (now {size} bytes, mtime_ns {mtime_ns})")
        self.size = size
        self.mtime_ns = mtime_ns


class FileVanished(SourceFileError):
    """The file (or object) is gone."""

    code = "file_vanished"

    def __init__(self, path: str) -> None:
        super().__init__(path, "no longer exists")


class FileTooLarge(SourceFileError):
    """The file is larger than the profile allows (the same code as an upload's)."""

    code = "file_too_large"

    def __init__(self, path: str, size: int, max_bytes: int) -> None:
        super().__init__(path, f"{size} bytes, over the limit of {max_bytes}")
        self.size = size
        self.max_bytes = max_bytes


class FileUnreadable(SourceFileError):
    """The file exists but cannot be read: permission, an I/O error, not a regular file."""

    code = "file_unreadable"


# What ``read_file`` and ``settled`` need of a file: a ``ScannedFile`` or a checkpoint row
# (``db.ingest.IngestFile``): path, size, mtime_ns, etag.
FileLike = ScannedLike


@dataclass(frozen=True)
class Source:
    """A directory or a bucket prefix files are ingested from."""

    uri: str  # canonical: "file:///abs/dir" or "{provider}://{bucket}/{prefix}"
    directory: Path | None = None  # a directory source: absolute, symlinks resolved
    store: Store | None = field(default=None, compare=False)  # a bucket source's store
    prefix: str = ""  # a bucket source's key prefix ("" or ending in "/")

    def locator(self, path: str) -> Locator:
        """The object of ``path`` (relative to the prefix) in a bucket source. Raises
        ``ValueError`` for a directory source, ``InvalidKey`` for a path no key can be."""
        if self.store is None:
            raise ValueError(f"{self.uri} is not a bucket source")
        return self.store.locator(self.prefix + path)

    def file_path(self, path: str) -> Path:
        """The file of ``path`` (relative, "/"-separated) in a directory source. Raises
        ``ValueError`` for a bucket source or a path that could leave the directory
        (absolute, empty, ``.`` or ``..`` segments)."""
        if self.directory is None:
            raise ValueError(f"{self.uri} is not a directory source")
        if path.startswith("/") or any(part in ("", ".", "..") for part in path.split("/")):
            raise ValueError(f"not a relative path: {path!r}")
        return self.directory / path


def parse_source(text: str, stores: StoreRegistry) -> Source:
    """The source ``text`` names: a directory (``file://`` URLs too) or a bucket prefix.

    A directory must exist, be a directory and be readable; it is resolved to an absolute
    path (symlinks included) and its uri is ``Path.as_uri()`` (percent-encoded).
    ``s3://bucket/prefix``, ``gs://bucket/prefix`` (provider ``gcs``) and any
    ``{provider}://bucket/prefix`` are looked up by provider and bucket among ``stores``
    (``memory://`` too); the prefix gains a trailing ``/``. Raises ``SourceInvalid``
    naming the problem (for an unknown bucket: the configured ones)."""
    text = text.strip()
    if not text:
        raise SourceInvalid("SOURCE is empty: give a directory or a bucket prefix")
    scheme, sep, rest = text.partition("://")
    if not sep:
        return _directory_source(Path(text).expanduser())
    scheme = scheme.lower()
    if scheme == "file":
        parts = urllib.parse.urlsplit(text)
        if parts.netloc not in ("", "localhost"):
            raise SourceInvalid(f"{text}: a file URL of another host ({parts.netloc})")
        if not parts.path.startswith("/"):  # file:// alone would be the current directory
            raise SourceInvalid(f"{text}: a file URL needs an absolute path (file:///srv/photos)")
        if "?" in text or "#" in text:  # urlsplit would drop them: another directory
            raise SourceInvalid(
                f"{text}: a file URL has no query or fragment: percent-encode '?' and '#' "
                "(%3F, %23), or give the path as it is"
            )
        return _directory_source(Path(os.fsdecode(urllib.parse.unquote_to_bytes(parts.path))))
    provider = _SCHEME_PROVIDERS.get(scheme, scheme)
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise SourceInvalid(f"{text}: no bucket name")
    prefix = prefix.strip("/")
    prefix = f"{prefix}/" if prefix else ""
    try:
        validate_prefix(prefix)
    except InvalidKey as exc:
        raise SourceInvalid(f"{text}: the prefix {prefix!r} cannot be a key prefix: {exc}") from exc
    store = next((s for s in stores.stores if s.provider == provider and s.bucket == bucket), None)
    if store is None:
        configured = ", ".join(sorted(f"{s.provider}://{s.bucket}" for s in stores.stores))
        raise SourceInvalid(
            f"{text}: no configured store serves {provider}://{bucket} "
            f"(configured: {configured or 'none'})"
        )
    return Source(uri=f"{provider}://{bucket}/{prefix}", store=store, prefix=prefix)


def _directory_source(path: Path) -> Source:
    try:
        resolved = path.resolve(strict=True)
    except FileNotFoundError as exc:
        raise SourceInvalid(f"{path}: no such directory") from exc
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop (Python 3.11)
        raise SourceInvalid(f"{path}: cannot be resolved: {exc}") from exc
    if not resolved.is_dir():
        raise SourceInvalid(f"{path}: not a directory")
    try:
        with os.scandir(resolved) as entries:
            next(entries, None)
    except OSError as exc:
        raise SourceInvalid(f"{path}: cannot be read: {exc.strerror or exc}") from exc
    return Source(uri=resolved.as_uri(), directory=resolved)


@dataclass(frozen=True, slots=True)
class ScanBatch:
    """One batch of a scan: its files, and what the walk counted since the previous batch
    (``counts.files == len(files)``; skipped and errors seen meanwhile)."""

    files: list[ScannedFile]
    counts: ScanCounts


async def scan_source(
    source: Source,
    *,
    batch_size: int = SCAN_BATCH_SIZE,
    max_seconds: float = SCAN_BATCH_SECONDS,
) -> AsyncGenerator[ScanBatch, None]:
    """The source's approved files in batches of at most ``batch_size``, each sent once full
    or once ``max_seconds`` old (checked as files arrive), for the scan job to record one
    batch per transaction. Adding up every batch's ``counts`` gives the walk's totals; the
    last batch may hold no files (the counts of the walk's tail). A directory is walked in
    a thread, a batch at a time, so the event loop never blocks on the file system; the
    thread reads the next batch while the caller records this one (walk and database
    overlap: on 2 cores, a first scan's wall time is about the larger of the two, not their
    sum), so one batch more than the caller holds is in memory."""
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    counts = ScanCounts()
    reported = ScanCounts()
    if source.directory is not None:
        walk = walk_directory(source.directory, counts)
        ahead: asyncio.Future[tuple[list[ScannedFile], bool]] | None = None
        try:
            reading = asyncio.ensure_future(asyncio.to_thread(_take, walk, batch_size, max_seconds))
            ahead = reading
            while True:
                # Shielded: a caller cancelled here leaves the thread's read running (it
                # cannot be stopped), and the walk is closed once it ends (finally below).
                files, done = await asyncio.shield(reading)
                ahead = None
                delta = counts.since(reported)
                reported = counts.copy()
                if not done:  # the walk goes on while the caller records this batch
                    reading = asyncio.ensure_future(
                        asyncio.to_thread(_take, walk, batch_size, max_seconds)
                    )
                    ahead = reading
                if files or delta:
                    yield ScanBatch(files, delta)
                if done:
                    return
        finally:
            # Closes the directory the walk holds open. When the caller stops early while
            # the thread reads ahead, the walk is closed once that thread's batch is read
            # (nobody reads the batch).
            if ahead is None or ahead.done():
                _close_walk(walk, ahead)
            else:
                ahead.add_done_callback(lambda task: _close_walk(walk, task))
    assert source.store is not None
    batch: list[ScannedFile] = []
    started = time.monotonic()
    async for file in walk_bucket(source.store, source.prefix, counts):
        batch.append(file)
        if len(batch) >= batch_size or time.monotonic() - started >= max_seconds:
            delta = counts.since(reported)
            reported = counts.copy()
            yield ScanBatch(batch, delta)
            batch = []
            started = time.monotonic()
    delta = counts.since(reported)
    if batch or delta:
        yield ScanBatch(batch, delta)


def _close_walk(walk: Generator[ScannedFile, None, None], task: asyncio.Future[Any] | None) -> None:
    """Close the walk once no thread is in it; the error of a read-ahead batch nobody reads
    is retrieved (not logged as never retrieved)."""
    if task is not None and not task.cancelled():
        task.exception()
    # A thread still inside (its task cancelled at loop shutdown): the walk is closed when
    # it is collected.
    with contextlib.suppress(ValueError):
        walk.close()


def _take(
    walk: Iterator[ScannedFile], size: int, max_seconds: float
) -> tuple[list[ScannedFile], bool]:
    """Up to ``size`` files from ``walk`` (fewer once ``max_seconds`` have passed), and
    whether the walk is over."""
    deadline = time.monotonic() + max_seconds
    files: list[ScannedFile] = []
    for file in walk:
        files.append(file)
        if len(files) >= size or time.monotonic() >= deadline:
            return files, False
    return files, True


async def stat_file(source: Source, path: str) -> ScannedFile | None:
    """The file's size, mtime (and etag, for a bucket) now, or None when it is gone.

    Directory: ``os.stat`` in a thread (following symlinks, as the walk does); raises
    ``FileUnreadable`` for a permission or I/O error or a path that is no longer a regular
    file. Bucket: ``store.head``; storage errors propagate."""
    if source.directory is not None:
        return await asyncio.to_thread(_stat_path, source, path)
    assert source.store is not None
    info = await source.store.head(validate_key(source.prefix + path))
    if info is None:
        return None
    return ScannedFile(path, info.size, mtime_ns_of(info.updated_at), info.etag)


def _stat_path(source: Source, path: str) -> ScannedFile | None:
    try:
        info = os.stat(source.file_path(path))
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise FileUnreadable(path, exc.strerror or str(exc)) from exc
    if not stat.S_ISREG(info.st_mode):
        raise FileUnreadable(path, "not a regular file")
    return ScannedFile(path, info.st_size, info.st_mtime_ns)


def settled(
    expected: FileLike,
    current: FileLike,
    *,
    settle_seconds: float,
    now_ns: int | None = None,
) -> bool:
    """True when the directory file ``current`` (from ``stat_file``) is the file the
    checkpoint row ``expected`` describes and it is complete: same size, mtime and etag,
    and its mtime at least ``settle_seconds`` away from now (``now_ns``, default the wall
    clock). Bucket objects need no settling: see ``check_file``.

    "Away", not only "older": a file being written has an mtime of about now, whereas one
    with an mtime far in the future (a camera's wrong clock kept by ``cp -p``) is not being
    written and would otherwise never settle."""
    if (current.size, current.mtime_ns, current.etag) != (
        expected.size,
        expected.mtime_ns,
        expected.etag,
    ):
        return False
    now = time.time_ns() if now_ns is None else now_ns
    return abs(now - current.mtime_ns) >= settle_seconds * 1e9


class FileState(StrEnum):
    """What ``check_file`` found."""

    STABLE = "stable"  # complete and as recorded: read it now
    CHANGED = "changed"  # being written or replaced: defer it with ``current``'s values
    VANISHED = "vanished"  # gone


@dataclass(frozen=True, slots=True)
class FileCheck:
    state: FileState
    current: ScannedFile | None  # what the file is now; None when it vanished


async def check_file(
    source: Source,
    expected: FileLike,
    *,
    settle_seconds: float,
    now_ns: int | None = None,
) -> FileCheck:
    """Whether a batch reads the file of the checkpoint row ``expected`` now.

    Directory: ``stat_file`` then ``settled`` (``CHANGED`` when the size, mtime differ or
    the mtime is within ``settle_seconds`` of now; defer the file with ``current``'s size
    and mtime, and it settles once it stops changing). Bucket: an object appears whole
    when its upload completes (S3 and GCS writes are atomic), so there is nothing to wait
    for: ``STABLE`` whenever it exists, also when it was replaced since the scan (its
    listing's ETag and a HEAD's last-modified would otherwise never match a deferred row
    again). Raises ``FileUnreadable`` as ``stat_file`` does."""
    current = await stat_file(source, expected.path)
    if current is None:
        return FileCheck(FileState.VANISHED, None)
    if source.directory is None or settled(
        expected, current, settle_seconds=settle_seconds, now_ns=now_ns
    ):
        return FileCheck(FileState.STABLE, current)
    return FileCheck(FileState.CHANGED, current)


async def read_file(source: Source, file: FileLike, *, max_bytes: int) -> bytes:
    """Every byte of ``file``, provided it is still as the scan saw it.

    Directory (read in a thread): ``FileChanged`` when the size or mtime differs from
    ``file``'s, before or after the read (or the bytes read disagree with the size);
    ``FileVanished`` when it is gone; ``FileTooLarge`` when it is over ``max_bytes``;
    ``FileUnreadable`` on a permission or I/O error or when it is not a regular file (a fifo
    is never waited on: it is opened non-blocking). Bucket: the store's object as it is now
    (objects are written whole; one replaced since the scan is read in its new version,
    and the next scan queues it again under its new ETag); ``ObjectNotFound`` ->
    ``FileVanished``; ``FileTooLarge`` when ``file.size`` (checked before the download) or
    the object is over ``max_bytes``. Other storage errors propagate (the batch retries)."""
    if source.directory is not None:
        return await asyncio.to_thread(_read_path, source, file, max_bytes)
    assert source.store is not None
    if file.size > max_bytes:
        raise FileTooLarge(file.path, file.size, max_bytes)
    try:
        data = await source.store.download(validate_key(source.prefix + file.path))
    except ObjectNotFound as exc:
        raise FileVanished(file.path) from exc
    if len(data) > max_bytes:
        raise FileTooLarge(file.path, len(data), max_bytes)
    return data


def _read_path(source: Source, file: FileLike, max_bytes: int) -> bytes:
    path = source.file_path(file.path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        raise FileVanished(file.path) from exc
    except OSError as exc:
        raise FileUnreadable(file.path, exc.strerror or str(exc)) from exc
    try:
        before = _fstat(fd, file)
        if before.st_size > max_bytes:
            raise FileTooLarge(file.path, before.st_size, max_bytes)
        data = _read_exactly(fd, file)
        after = _fstat(fd, file)
        if len(data) != after.st_size:
            raise FileChanged(file.path, after.st_size, after.st_mtime_ns)
        return data
    finally:
        os.close(fd)


def _fstat(fd: int, file: FileLike) -> os.stat_result:
    """The open file's stat, checked against the scan's values."""
    try:
        info = os.fstat(fd)
    except OSError as exc:
        raise FileUnreadable(file.path, exc.strerror or str(exc)) from exc
    if not stat.S_ISREG(info.st_mode):
        raise FileUnreadable(file.path, "not a regular file")
    if (info.st_size, info.st_mtime_ns) != (file.size, file.mtime_ns):
        raise FileChanged(file.path, info.st_size, info.st_mtime_ns)
    return info


def _read_exactly(fd: int, file: FileLike) -> bytes:
    """The file's bytes: reads until the end, asking for one byte more than the expected
    size so that a file that grew is seen (``FileChanged``) without reading all of it."""
    chunks: list[bytes] = []
    total = 0
    while True:
        try:
            chunk = os.read(fd, file.size + 1 - total)
        except OSError as exc:
            raise FileUnreadable(file.path, exc.strerror or str(exc)) from exc
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        total += len(chunk)
        if total > file.size:
            info = os.fstat(fd)
            raise FileChanged(file.path, max(info.st_size, total), info.st_mtime_ns)


async def source_reachable(source: Source) -> bool:
    """Whether the source as a whole is there: a directory that exists and lists at least
    one entry (an unmounted disk's mount point is empty or gone). A bucket source: True
    (the store's own errors say when it is not)."""
    if source.directory is None:
        return True
    return await asyncio.to_thread(_has_entries, source.directory)


def _has_entries(directory: Path) -> bool:
    try:
        with os.scandir(directory) as entries:
            return next(entries, None) is not None
    except OSError:
        return False
