"""Walking an ingest source: a directory tree or a bucket prefix, streamed, never listed.

``walk_directory`` is a generator over ``os.scandir``: one directory is open at a time
(its ``with`` block is left before the walk descends), the directories still to visit are
kept as a stack of paths, and each approved file is yielded as soon as it is seen. Memory
is O(depth x directory width) -- the stack of pending subdirectories -- never O(tree), and
"too many open files" cannot happen however deep the tree (issue 16's known failures: the
whole listing held in memory, out of descriptors during a walk, hours of listing before
the first image).

Symlinks are followed, with loop detection: the ``(st_dev, st_ino)`` of every directory
from the root down to the current one is kept as a chain, and a directory that is its own
ancestor is a loop. A symlink whose target lies inside the root is an alias of a path the
walk reaches anyway: it is not followed (a directory) or not yielded (a file, counted as
skipped), so the same bytes are not ingested twice under two paths. A symlink that leads
outside the root is followed.

Nothing about one entry is fatal: a loop, an unreadable directory, a file that vanishes
between the listing and its ``stat``, a dangling symlink and a name that is not valid
UTF-8 (a Postgres ``text`` cannot hold it) are counted in ``ScanCounts.errors`` and logged
with the path (``repr`` of the raw bytes for undecodable names).

``walk_bucket`` reads ``store.list`` a page at a time with the same extension filter.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import AsyncIterator, Generator, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

from mediajobs.errors import InvalidKey
from mediajobs.logs import quoted
from mediajobs.storage.base import Store
from mediajobs.storage.keys import validate_key

log = logging.getLogger(__name__)

T = TypeVar("T")

# The formats issue 16 approves (the seed's list plus HEIC/HEIF and AVIF, which uploads
# accept too), matched case-insensitively against the last suffix of the name.
APPROVED_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".heic", ".heif", ".avif"}
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class ScannedFile:
    """One approved file a walk found."""

    path: str  # relative to the source root, "/"-separated, valid UTF-8 (Postgres text)
    size: int  # bytes
    mtime_ns: int  # ns since the epoch (bucket: the object's last-modified)
    etag: str | None = None  # bucket sources: the object's ETag as the store gives it


@dataclass
class ScanCounts:
    """What a walk has seen so far; the walk adds to it as it goes."""

    files: int = 0  # approved files yielded
    skipped: int = 0  # other files (other extensions, sockets, fifos, aliases of files)
    errors: int = 0  # symlink loops, unreadable directories, vanished files, undecodable names

    def copy(self) -> ScanCounts:
        """A snapshot of the counts now."""
        return ScanCounts(self.files, self.skipped, self.errors)

    def since(self, earlier: ScanCounts) -> ScanCounts:
        """What was counted after ``earlier`` (a ``copy()`` of these counts) was taken."""
        return ScanCounts(
            self.files - earlier.files,
            self.skipped - earlier.skipped,
            self.errors - earlier.errors,
        )

    def __bool__(self) -> bool:
        return bool(self.files or self.skipped or self.errors)


def is_approved(name: str) -> bool:
    """True when ``name``'s last suffix is an approved extension (any case); a name that is
    only a suffix (``.jpg``, a hidden file) has none."""
    return os.path.splitext(name)[1].lower() in APPROVED_EXTENSIONS


def mtime_ns_of(moment: datetime | None) -> int:
    """Nanoseconds since the epoch of a bucket object's last-modified time (exact to the
    microsecond a ``datetime`` holds; naive values are taken as UTC; None -> 0)."""
    if moment is None:
        return 0
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return ((moment - _EPOCH) // timedelta(microseconds=1)) * 1000


@dataclass(frozen=True, slots=True)
class _Ancestry:
    """The directories from the root down to one directory: ``(st_dev, st_ino)`` each,
    shared by siblings (a linked list), so the walk holds O(depth) of them."""

    key: tuple[int, int]
    parent: _Ancestry | None

    def __contains__(self, key: object) -> bool:
        node: _Ancestry | None = self
        while node is not None:
            if node.key == key:
                return True
            node = node.parent
        return False


@dataclass(frozen=True, slots=True)
class _Pending:
    """A directory still to walk."""

    path: str  # as the file system knows it (may hold undecodable bytes as surrogates)
    rel: str  # relative to the root, "" for the root itself
    parent: _Ancestry | None


def _inside(root: str, target: str) -> bool:
    return target == root or target.startswith(root.rstrip("/") + "/")


def _join(rel: str, name: str) -> str:
    return f"{rel}/{name}" if rel else name


def walk_directory(root: Path, counts: ScanCounts) -> Generator[ScannedFile, None, None]:
    """Every approved regular file under ``root``, depth first, as each is seen.

    ``root`` is resolved (symlinks included) first. Paths are relative to it. Entries of one
    directory come in the file system's order (not sorted: sorting would hold a whole
    directory in memory). ``counts`` is updated as the walk goes; nothing raises for one
    entry (see the module docstring); an unreadable ``root`` is one error and no files."""
    top = os.path.realpath(root)
    stack = [_Pending(top, "", None)]
    # Directories outside the root reached through symlinks: two links to one of them walk
    # it once (its files are not imported twice). Only these are kept, so memory grows with
    # the links that leave the root, not with the tree.
    outside: set[tuple[int, int]] = set()
    while stack:
        pending = stack.pop()
        try:
            info = os.stat(pending.path)
        except OSError as exc:
            _error(counts, "cannot stat directory", pending.path, exc)
            continue
        key = (info.st_dev, info.st_ino)
        if pending.parent is not None and key in pending.parent:
            _error(counts, "symlink loop", pending.path)
            continue
        if pending.parent is not None and not _inside(top, os.path.realpath(pending.path)):
            if key in outside:
                log.info(
                    "ingest scan: %s was walked through another link; skipped", _shown(pending.path)
                )
                continue
            outside.add(key)
        ancestry = _Ancestry(key, pending.parent)
        subdirectories: list[_Pending] = []
        try:
            with os.scandir(pending.path) as entries:
                for entry in entries:
                    found = _entry(entry, pending.rel, top, ancestry, counts, subdirectories)
                    if found is not None:
                        counts.files += 1
                        yield found
        except OSError as exc:  # opening or reading the directory (EACCES, EIO, ENOENT)
            _error(counts, "unreadable directory", pending.path, exc)
        # The directory is closed before the walk descends; reversed so that the first
        # subdirectory listed is walked first.
        stack.extend(reversed(subdirectories))


def _entry(
    entry: os.DirEntry[str],
    rel: str,
    top: str,
    ancestry: _Ancestry,
    counts: ScanCounts,
    subdirectories: list[_Pending],
) -> ScannedFile | None:
    """One directory entry: the file to yield, or None (a subdirectory is queued instead, or
    the entry is counted as skipped or as an error)."""
    name = entry.name
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        counts.errors += 1
        log.warning("ingest scan: a name that is not valid UTF-8: %r", os.fsencode(entry.path))
        return None
    try:
        is_directory = entry.is_dir()
        is_file = not is_directory and entry.is_file()
        is_symlink = entry.is_symlink()
    except OSError as exc:
        _error(counts, "cannot read entry", entry.path, exc)
        return None
    if is_directory:
        if is_symlink and not _follow_directory_link(entry.path, top, ancestry, counts):
            return None
        subdirectories.append(_Pending(entry.path, _join(rel, name), ancestry))
        return None
    if not is_file:
        if is_symlink and not os.path.exists(entry.path):
            _error(counts, "dangling symlink", entry.path)
        else:
            counts.skipped += 1  # a socket, fifo or device: never opened
        return None
    if not is_approved(name):
        counts.skipped += 1
        return None
    if is_symlink and _inside(top, os.path.realpath(entry.path)):
        counts.skipped += 1  # an alias: the walk yields the target under its own path
        log.debug("ingest scan: %s links inside the source, skipped as an alias", entry.path)
        return None
    try:
        info = entry.stat()
    except FileNotFoundError:
        _error(counts, "vanished during the scan", entry.path)
        return None
    except OSError as exc:
        _error(counts, "cannot stat file", entry.path, exc)
        return None
    if not stat.S_ISREG(info.st_mode):  # replaced by something else since the listing
        counts.skipped += 1
        return None
    return ScannedFile(_join(rel, name), info.st_size, info.st_mtime_ns)


def _follow_directory_link(path: str, top: str, ancestry: _Ancestry, counts: ScanCounts) -> bool:
    """Whether the walk descends into the directory the symlink ``path`` leads to: not when
    that is an ancestor (a loop, an error) or lies inside the root (an alias, walked anyway
    under its real path)."""
    target = os.path.realpath(path)
    if not _inside(top, target):
        return True  # outside the root: followed; a loop out there is caught on entering
    try:
        info = os.stat(path)
    except OSError as exc:
        _error(counts, "cannot stat directory", path, exc)
        return False
    if (info.st_dev, info.st_ino) in ancestry:
        _error(counts, "symlink loop", path)
    else:
        log.info(
            "ingest scan: %s links inside the source, walked under %s instead",
            _shown(path),
            _shown(target),
        )
    return False


def _error(counts: ScanCounts, what: str, path: str, exc: OSError | None = None) -> None:
    counts.errors += 1
    shown = _shown(path)
    if exc is None:
        log.warning("ingest scan: %s: %s", what, shown)
    else:
        log.warning("ingest scan: %s: %s (%s)", what, shown, exc.strerror or exc)


def _shown(path: str) -> str:
    """``path`` for a log line: JSON-quoted when it is not a plain token
    (``mediajobs.logs.quoted``), its bytes' repr when it is not valid UTF-8."""
    return quoted(path) if _decodable(path) else repr(os.fsencode(path))


def _decodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


async def walk_bucket(
    store: Store, prefix: str, counts: ScanCounts, *, page_size: int = 1000
) -> AsyncIterator[ScannedFile]:
    """Every approved object under ``prefix`` (``""`` or ending in ``/``), in key order, a
    ``store.list`` page (``page_size`` keys, at most 1000: S3's limit) at a time.

    Paths are the keys without ``prefix``; ``mtime_ns`` comes from the object's
    ``updated_at``, ``etag`` from the listing. Folder markers (keys ending in ``/``) are not
    files and are not counted. A key the store could not read back (``validate_key``
    refuses it: ``//``, ``.`` or ``..`` segments, backslashes, control characters) is an
    error, logged. Storage errors of the listing itself propagate (the scan job retries)."""
    if prefix and not prefix.endswith("/"):
        raise ValueError("a bucket prefix is empty or ends with '/'")
    cursor: str | None = None
    while True:
        page = await store.list(prefix, cursor, limit=page_size)
        for item in page.items:
            if item.key.endswith("/"):
                continue
            if not is_approved(item.key.rsplit("/", 1)[-1]):
                counts.skipped += 1
                continue
            try:
                validate_key(item.key)
            except InvalidKey as exc:
                counts.errors += 1
                log.warning(
                    "ingest scan: an object key that cannot be read: %r (%s)", item.key, exc
                )
                continue
            counts.files += 1
            yield ScannedFile(
                item.key[len(prefix) :], item.size, mtime_ns_of(item.updated_at), item.etag
            )
        if page.cursor is None:
            return
        cursor = page.cursor


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Lists of ``size`` items from ``items`` (the last may be shorter), lazily:
    ``itertools.batched`` exists only from Python 3.12 and we support 3.11."""
    if size < 1:
        raise ValueError("size must be >= 1")
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
