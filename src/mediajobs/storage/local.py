"""The development store on disk: the memory store's interface and ``/storage`` app, with
its objects kept as files under a directory (``<MEDIAJOBS_DATA_DIR>/storage`` for
``mediajobs dev`` and ``serve`` in development), so they survive a restart like the
embedded database beside them.

Layout: one file per object, ``<directory>/objects/<h[:2]>/<h>`` where ``h`` is the hex
SHA-256 of the key's UTF-8. The file is one line of JSON (``key``, ``contentType``,
``etag``, ``updatedAt``, ``cacheControl``) then the object's bytes. Why hashed names, not
the key as a path: every key maps inside the directory whatever it holds (no ``..``, no
absolute path, no segment over a file system's 255-byte name limit), and keys such as
``a`` and ``a/b`` coexist, as in a bucket. Writes go to a temporary file in the same
directory, are flushed to disk (fsync) and renamed over the object (``os.replace``, atomic
on POSIX), so a reader or a crash sees the old object or the new one, never a mix.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from mediajobs.storage.base import ObjectInfo
from mediajobs.storage.memory import MemoryStore, _Object

log = logging.getLogger(__name__)

_T = TypeVar("_T")
_TEMP_PREFIX = ".tmp-"
_HEADER_FIELDS = ("key", "contentType", "etag", "updatedAt", "cacheControl")
_MAX_HEADER = 64 * 1024  # a header holds a key of at most 1024 bytes, JSON-escaped


class LocalStore(MemoryStore):
    """A ``MemoryStore`` whose objects live in files under ``directory`` (created on the
    first write). Reads go to the files each time (nothing cached): another ``LocalStore`` on
    the same directory, e.g. the next run of ``mediajobs dev``, sees every object."""

    def __init__(
        self,
        base_url: str,
        directory: Path,
        *,
        secret: bytes | None = None,
        bucket: str = "memory",
        provider: str = "memory",
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(base_url, secret=secret, bucket=bucket, provider=provider, clock=clock)
        self.directory = directory
        self._root = directory / "objects"
        log.info("development store: objects kept under %s", directory)

    def write_now(self, key: str, data: bytes, content_type: str) -> None:
        """Store ``data`` under ``key`` (already validated) from a thread with no event loop
        (a worker's start-up probe, ``storage.factory.shares_directory``); the async
        ``upload`` otherwise."""
        self._save(key, self._object(data, content_type))

    def remove_now(self, key: str) -> None:
        """Delete ``key``'s object, as ``write_now`` wrote it (nothing when it is gone)."""
        self._remove(key)

    async def _call(self, function: Callable[..., _T], *args: Any) -> _T:
        return await asyncio.to_thread(function, *args)

    def _path(self, key: str) -> Path:
        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()
        return self._root / digest[:2] / digest

    def _load(self, key: str) -> _Object | None:
        try:
            with self._path(key).open("rb") as handle:
                header = _header(handle, key)
                data = handle.read() if header is not None else b""
        except FileNotFoundError:
            return None
        if header is None:
            return None
        return _Object(
            data=data,
            content_type=header["contentType"],
            etag=header["etag"],
            updated_at=datetime.fromisoformat(header["updatedAt"]),
            cache_control=header["cacheControl"],
        )

    def _stat(self, key: str) -> ObjectInfo | None:
        return _read_info(self._path(key), key)

    def _save(self, key: str, obj: _Object) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        header = {
            "key": key,
            "contentType": obj.content_type,
            "etag": obj.etag,
            "updatedAt": obj.updated_at.isoformat(),
            "cacheControl": obj.cache_control,
        }
        fd, temp = tempfile.mkstemp(prefix=_TEMP_PREFIX, dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(json.dumps(header).encode() + b"\n")  # ASCII: no raw newline
                handle.write(obj.data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            raise

    def _remove(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(key).unlink()

    def _infos(self, prefix: str) -> list[ObjectInfo]:
        infos = []
        for path in self._files():
            info = _read_info(path, None)
            if info is not None and info.key.startswith(prefix):
                infos.append(info)
        return infos

    def _files(self) -> Iterator[Path]:
        if not self._root.is_dir():
            return
        for shard in self._root.iterdir():
            if shard.is_dir():
                yield from (p for p in shard.iterdir() if not p.name.startswith(_TEMP_PREFIX))


def _header(handle: BinaryIO, key: str | None) -> dict[str, Any] | None:
    """The JSON first line of an object file; None when it is not an object of ``key``
    (None: any key) or not an object file at all."""
    try:
        header = json.loads(handle.readline(_MAX_HEADER))
    except ValueError:
        return None
    if not isinstance(header, dict) or not all(
        isinstance(header.get(field), str) for field in _HEADER_FIELDS
    ):
        return None
    if key is not None and header["key"] != key:
        return None
    try:
        datetime.fromisoformat(header["updatedAt"])
    except ValueError:
        return None
    return header


def _read_info(path: Path, key: str | None) -> ObjectInfo | None:
    try:
        with path.open("rb") as handle:
            header = _header(handle, key)
            if header is None:
                return None
            start = handle.tell()
            size = os.fstat(handle.fileno()).st_size - start
    except FileNotFoundError:
        return None
    return ObjectInfo(
        header["key"],
        size,
        header["contentType"],
        header["etag"],
        datetime.fromisoformat(header["updatedAt"]),
    )
