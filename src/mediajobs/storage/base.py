"""The ``Store`` interface and the values it speaks in.

Every adapter (memory, S3, GCS) implements ``Store``. Keys are validated by the adapter
before any I/O (``keys.validate_key``). Blocking SDK calls run in threads, never on the
event loop, and provider errors are translated into ``mediajobs.errors.StorageError``
subclasses once, at the adapter boundary.
"""

from __future__ import annotations

import asyncio
import io
import urllib.parse
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import BinaryIO, Protocol, TypeVar

from mediajobs.errors import InvalidKey
from mediajobs.storage.keys import validate_key

T = TypeVar("T")

# What `upload` accepts: bytes in memory, a binary file object (read in threads), or an
# async iterable of chunks (streamed; never joined in memory by the S3 and GCS adapters).
UploadData = bytes | bytearray | memoryview | BinaryIO | AsyncIterable[bytes]

CHUNK_SIZE = 1024 * 1024  # streaming reads hand out chunks of this size


@dataclass(frozen=True)
class Locator:
    """Provider-agnostic identity of a stored object; persist this, never a URL."""

    provider: str  # the store's name: "memory", "s3", "lightsail", "gcs", ...
    bucket: str
    key: str

    def __str__(self) -> str:
        return f"{self.provider}://{self.bucket}/{self.key}"

    @classmethod
    def parse(cls, text: str) -> Locator:
        """The inverse of ``str(locator)``."""
        provider, sep, rest = text.partition("://")
        bucket, slash, key = rest.partition("/")
        if not (sep and slash and provider and bucket and key):
            raise InvalidKey(f"not a locator: {text!r}")
        return cls(provider, bucket, key)


@dataclass(frozen=True)
class ObjectInfo:
    """What a store knows about one object (``head``, and each item of ``list``)."""

    key: str
    size: int
    content_type: str | None  # None where the provider's listing omits it (S3)
    etag: str | None
    updated_at: datetime | None


@dataclass(frozen=True)
class ObjectPage:
    items: list[ObjectInfo]
    cursor: str | None  # pass back to `list` for the next page; None on the last page


@dataclass(frozen=True)
class StoredObject:
    locator: Locator
    size: int
    content_type: str
    etag: str | None


@dataclass(frozen=True)
class PresignedUpload:
    """How a browser uploads one object straight to storage.

    ``method`` is ``PUT`` (send the body with exactly ``headers``) or ``POST`` (a
    multipart form: every ``fields`` entry, then the file as the last part, named
    ``file``). The signature binds the key, the content type and, where the provider can
    enforce it, the size limit."""

    locator: Locator
    url: str
    method: str
    headers: dict[str, str]
    fields: dict[str, str] = field(default_factory=dict)
    expires_at: datetime | None = None
    max_bytes: int = 0
    content_type: str = ""


class Store(Protocol):
    """Object storage for media bytes. Keys are backend-owned (see ``storage.keys``)."""

    @property
    def provider(self) -> str:
        """The name locators carry (``memory``, ``s3``, ``lightsail``, ``gcs``, ...)."""

    @property
    def bucket(self) -> str: ...

    def locator(self, key: str) -> Locator:
        """The locator of ``key`` in this store (validates the key)."""

    async def upload(
        self, key: str, data: UploadData, content_type: str, *, cache_control: str | None = None
    ) -> StoredObject:
        """Write an object, replacing any object under the same key."""

    async def presign_upload(
        self, key: str, content_type: str, max_bytes: int, expires_in: float = 900.0
    ) -> PresignedUpload:
        """A signed request a browser can send to write ``key`` directly."""

    async def url(self, key: str, *, expires_in: float = 3600.0) -> str:
        """The render URL: the public base URL + key when configured, else a signed GET."""

    def public_url(self, key: str) -> str | None:
        """The permanent public URL of ``key`` (the public base URL + key), or None for a
        private bucket: a signed URL expires and names the bucket and the signing key, so
        bodies that are cached publicly (``GET /public/entities/...``) use only this."""

    def open(self, key: str, *, chunk_size: int = CHUNK_SIZE) -> AsyncIterator[bytes]:
        """Stream the object in chunks; raises ``ObjectNotFound`` on first iteration."""

    async def download(self, key: str) -> bytes:
        """The whole object (for small objects; stream big ones with ``open``)."""

    async def head(self, key: str) -> ObjectInfo | None:
        """Metadata, or None when there is no such object."""

    async def delete(self, key: str) -> None:
        """Remove the object; deleting a missing key is not an error."""

    async def list(
        self, prefix: str = "", cursor: str | None = None, limit: int = 1000
    ) -> ObjectPage:
        """Objects whose key starts with ``prefix``, in key order, a page at a time."""

    async def close(self) -> None:
        """Release clients and threads."""


async def run_blocking(call: Callable[[], T]) -> T:
    """Run a blocking SDK call in a worker thread."""
    return await asyncio.to_thread(call)


class StoreBase:
    """What every adapter shares: its name, its bucket, locators and public URLs."""

    def __init__(self, provider: str, bucket: str, public_base_url: str | None = None) -> None:
        self._provider = provider
        self._bucket_name = bucket
        self._public_base_url = public_base_url.rstrip("/") if public_base_url else None

    @property
    def provider(self) -> str:
        return self._provider

    @property
    def bucket(self) -> str:
        return self._bucket_name

    def locator(self, key: str) -> Locator:
        return Locator(self._provider, self._bucket_name, validate_key(key))

    def public_url(self, key: str) -> str | None:
        return self._public_url(key)

    def _public_url(self, key: str) -> str | None:
        """``public base URL + quoted key`` when a public base URL is configured."""
        if self._public_base_url is None:
            return None
        return f"{self._public_base_url}/{urllib.parse.quote(key, safe='/')}"


class AsyncIterableReader(io.RawIOBase):
    """A blocking, readable file object over an async iterable of chunks, for SDKs that
    read uploads from a file in their own threads. ``read`` must run outside the event
    loop's thread: each call waits for the next chunk produced on the loop."""

    def __init__(self, chunks: AsyncIterable[bytes], loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._chunks = chunks.__aiter__()
        self._loop = loop
        self._buffer = b""
        self._done = False
        self.consumed = 0

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.consumed

    def read(self, size: int | None = -1) -> bytes:
        """Up to ``size`` bytes, short only at the end (SDKs size parts by what they get)."""
        if size is None or size < 0:
            return self.readall()
        out = bytearray()
        while len(out) < size:
            view = bytearray(min(size - len(out), CHUNK_SIZE))
            count = self.readinto(view)
            if not count:
                break
            out += view[:count]
        return bytes(out)

    def readinto(self, target: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._buffer and not self._done:
            future = asyncio.run_coroutine_threadsafe(self._next(), self._loop)
            chunk = future.result()
            if chunk is None:
                self._done = True
            else:
                self._buffer = bytes(chunk)
        size = min(len(target), len(self._buffer))
        target[:size] = self._buffer[:size]
        self._buffer = self._buffer[size:]
        self.consumed += size
        return size

    async def _next(self) -> bytes | None:
        try:
            return await self._chunks.__anext__()
        except StopAsyncIteration:
            return None


def is_bytes_like(data: UploadData) -> bool:
    return isinstance(data, bytes | bytearray | memoryview)


def is_async_iterable(data: UploadData) -> bool:
    return hasattr(data, "__aiter__")
