"""The in-memory store for development and tests, and the ASGI app serving it at /storage/.

Reads (GET/HEAD) are open, like a public bucket, with ETag / If-None-Match, single byte
ranges and Cache-Control. Writes (PUT) only come through a presigned URL whose HMAC covers
method, key, content type, max bytes and expiry; the app enforces all of them, and so for
signed DELETEs. ``RemoteMemoryStore`` is the client another process (a separate worker in
development) uses to reach these objects. ``local.LocalStore`` is this store with its objects
in files (what ``mediajobs dev`` uses), so they outlive the process.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import re
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import httpx
from starlette.types import Receive, Scope, Send

from mediajobs.errors import (
    InvalidKey,
    ObjectNotFound,
    StorageDenied,
    StorageError,
    StorageUnavailable,
)
from mediajobs.storage.base import (
    CHUNK_SIZE,
    ObjectInfo,
    ObjectPage,
    PresignedUpload,
    StoreBase,
    StoredObject,
    UploadData,
    is_async_iterable,
    is_bytes_like,
    run_blocking,
)
from mediajobs.storage.keys import validate_key, validate_prefix

_T = TypeVar("_T")

DEFAULT_CACHE_CONTROL = "no-cache"  # always revalidate; the ETag makes that cheap


@dataclass(frozen=True)
class _Object:
    data: bytes
    content_type: str
    etag: str
    updated_at: datetime
    cache_control: str


class _Signed(StoreBase):
    """What the memory store and its remote client share: the URL of a key and the HMAC
    that authorises a write or a delete through the ``/storage`` app."""

    def __init__(
        self,
        base_url: str,
        *,
        secret: bytes | None,
        bucket: str,
        provider: str,
        clock: Callable[[], float],
    ) -> None:
        super().__init__(provider, bucket, public_base_url=base_url)  # reads are open
        self._secret = secret or os.urandom(32)
        self._clock = clock

    def now(self) -> float:
        return self._clock()

    async def presign_upload(
        self, key: str, content_type: str, max_bytes: int, expires_in: float = 900.0
    ) -> PresignedUpload:
        validate_key(key)
        if max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        expires = int(self._clock() + expires_in)
        return PresignedUpload(
            locator=self.locator(key),
            url=self._signed_url("PUT", key, content_type, max_bytes, expires),
            method="PUT",
            headers={"Content-Type": content_type},
            expires_at=datetime.fromtimestamp(expires, UTC),
            max_bytes=max_bytes,
            content_type=content_type,
        )

    def _signed_url(
        self, method: str, key: str, content_type: str, max_bytes: int, expires: int
    ) -> str:
        query = {
            "ct": content_type,
            "max": str(max_bytes),
            "exp": str(expires),
            "sig": self.signature(method, key, content_type, max_bytes, expires),
        }
        return f"{self._object_url(key)}?{urllib.parse.urlencode(query)}"

    def signature(
        self, method: str, key: str, content_type: str, max_bytes: int, expires: int
    ) -> str:
        message = "\n".join((method, key, content_type, str(max_bytes), str(expires)))
        return hmac.new(self._secret, message.encode(), hashlib.sha256).hexdigest()

    async def url(self, key: str, *, expires_in: float = 3600.0) -> str:
        return self._object_url(validate_key(key))

    def _object_url(self, key: str) -> str:
        url = self._public_url(key)
        assert url is not None  # the memory store always has its base URL
        return url


class MemoryStore(_Signed):
    """Objects in a dict. ``base_url`` is where the ``/storage`` app is reachable, e.g.
    ``http://127.0.0.1:8000/storage``. Subclasses keep the objects elsewhere by overriding
    the five ``_load``/``_stat``/``_save``/``_remove``/``_infos`` hooks (``LocalStore``:
    files), which ``_call`` runs."""

    def __init__(
        self,
        base_url: str,
        *,
        secret: bytes | None = None,
        bucket: str = "memory",
        provider: str = "memory",
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(base_url, secret=secret, bucket=bucket, provider=provider, clock=clock)
        self._objects: dict[str, _Object] = {}

    # -- where the objects are kept (overridden by LocalStore) --------------------------------

    async def _call(self, function: Callable[..., _T], *args: Any) -> _T:
        """Run one hook (LocalStore: in a thread, the hooks do file I/O)."""
        return function(*args)

    def _load(self, key: str) -> _Object | None:
        return self._objects.get(key)

    def _stat(self, key: str) -> ObjectInfo | None:
        obj = self._objects.get(key)
        return None if obj is None else _info(key, obj)

    def _save(self, key: str, obj: _Object) -> None:
        self._objects[key] = obj

    def _remove(self, key: str) -> None:
        self._objects.pop(key, None)

    def _infos(self, prefix: str) -> list[ObjectInfo]:
        return [_info(key, obj) for key, obj in self._objects.items() if key.startswith(prefix)]

    # -- the Store interface ------------------------------------------------------------------

    async def upload(
        self, key: str, data: UploadData, content_type: str, *, cache_control: str | None = None
    ) -> StoredObject:
        validate_key(key)
        body = await _read_all(data)
        stored = await self.put(key, body, content_type, cache_control=cache_control)
        return StoredObject(self.locator(key), len(body), content_type, stored.etag)

    async def put(
        self, key: str, body: bytes, content_type: str, *, cache_control: str | None = None
    ) -> _Object:
        """Store ``body`` under ``key`` (already validated), replacing any object there."""
        obj = _Object(
            data=body,
            content_type=content_type,
            etag='"' + hashlib.md5(body, usedforsecurity=False).hexdigest() + '"',
            updated_at=datetime.fromtimestamp(self._clock(), UTC),
            cache_control=cache_control or DEFAULT_CACHE_CONTROL,
        )
        await self._call(self._save, key, obj)
        return obj

    async def get(self, key: str) -> _Object | None:
        """The object under ``key`` (already validated), or None."""
        return await self._call(self._load, key)

    async def open(self, key: str, *, chunk_size: int = CHUNK_SIZE) -> AsyncIterator[bytes]:
        obj = await self._require(key)
        for start in range(0, len(obj.data), chunk_size):
            yield obj.data[start : start + chunk_size]
            await asyncio.sleep(0)

    async def download(self, key: str) -> bytes:
        return (await self._require(key)).data

    async def _require(self, key: str) -> _Object:
        obj = await self.get(validate_key(key))
        if obj is None:
            raise ObjectNotFound(f"no object {key!r}")
        return obj

    async def head(self, key: str) -> ObjectInfo | None:
        return await self._call(self._stat, validate_key(key))

    async def delete(self, key: str) -> None:
        await self._call(self._remove, validate_key(key))

    async def list(
        self, prefix: str = "", cursor: str | None = None, limit: int = 1000
    ) -> ObjectPage:
        validate_prefix(prefix)
        if limit < 1:
            raise ValueError("limit must be >= 1")
        infos = sorted(
            (
                info
                for info in await self._call(self._infos, prefix)
                if cursor is None or info.key > cursor
            ),
            key=lambda info: info.key,
        )
        items = infos[:limit]
        return ObjectPage(items, items[-1].key if len(infos) > limit else None)

    async def close(self) -> None:
        return None

    def app(self) -> MemoryStorageApp:
        """The ASGI app to mount at ``/storage``."""
        return MemoryStorageApp(self)


def _info(key: str, obj: _Object) -> ObjectInfo:
    return ObjectInfo(key, len(obj.data), obj.content_type, obj.etag, obj.updated_at)


async def _read_all(data: UploadData) -> bytes:
    if is_bytes_like(data):
        return bytes(data)  # type: ignore[arg-type]
    if is_async_iterable(data):
        parts = bytearray()
        async for chunk in data:  # type: ignore[union-attr]
            parts += chunk
        return bytes(parts)
    body: bytes = await run_blocking(data.read)  # type: ignore[union-attr]
    return body


class RemoteMemoryStore(_Signed):
    """A client of another process's memory store, through its ``/storage`` app: a worker
    run apart from ``mediajobs serve`` in development reads and writes the API's objects.
    Writes and deletes are signed with the secret both derive from MEDIAJOBS_JWT_SECRET."""

    def __init__(
        self,
        base_url: str,
        *,
        secret: bytes,
        bucket: str = "memory",
        provider: str = "memory",
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(base_url, secret=secret, bucket=bucket, provider=provider, clock=clock)
        self._client = httpx.AsyncClient(timeout=30)

    async def upload(
        self, key: str, data: UploadData, content_type: str, *, cache_control: str | None = None
    ) -> StoredObject:
        validate_key(key)
        body = await _read_all(data)
        url = self._signed_url("PUT", key, content_type, len(body), int(self._clock() + 300))
        response = await self._request(
            "PUT", url, content=body, headers={"content-type": content_type}
        )
        etag = response.headers.get("etag")
        return StoredObject(self.locator(key), len(body), content_type, etag)

    async def open(self, key: str, *, chunk_size: int = CHUNK_SIZE) -> AsyncIterator[bytes]:
        url = self._object_url(validate_key(key))
        try:
            async with self._client.stream("GET", url) as response:
                if response.status_code == 404:
                    raise ObjectNotFound(f"no object {key!r}")
                _raise_for(response)
                async for chunk in response.aiter_bytes(chunk_size):
                    yield chunk
        except httpx.HTTPError as exc:
            raise StorageUnavailable(f"the memory store at {url} failed: {exc}") from exc

    async def download(self, key: str) -> bytes:
        response = await self._request("GET", self._object_url(validate_key(key)))
        if response.status_code == 404:
            raise ObjectNotFound(f"no object {key!r}")
        return response.content

    async def head(self, key: str) -> ObjectInfo | None:
        response = await self._request("HEAD", self._object_url(validate_key(key)))
        if response.status_code == 404:
            return None
        modified = response.headers.get("last-modified")
        return ObjectInfo(
            key,
            int(response.headers.get("content-length", "0")),
            response.headers.get("content-type"),
            response.headers.get("etag"),
            parsedate_to_datetime(modified) if modified else None,
        )

    async def delete(self, key: str) -> None:
        url = self._signed_url("DELETE", validate_key(key), "", 0, int(self._clock() + 300))
        await self._request("DELETE", url)

    async def list(
        self, prefix: str = "", cursor: str | None = None, limit: int = 1000
    ) -> ObjectPage:
        raise StorageError("a remote memory store cannot list; ask the process that holds it")

    async def close(self) -> None:
        await self._client.aclose()

    async def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self._client.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            raise StorageUnavailable(f"the memory store at {url} failed: {exc}") from exc
        if response.status_code != 404:
            _raise_for(response)
        return response


def _raise_for(response: httpx.Response) -> None:
    if response.status_code in (401, 403):
        raise StorageDenied(f"the memory store refused the request: {response.text[:200]}")
    if response.status_code >= 500:
        raise StorageUnavailable(f"the memory store answered {response.status_code}")
    if response.status_code >= 400:
        raise StorageError(
            f"the memory store answered {response.status_code}: {response.text[:200]}"
        )


# -- the ASGI app -----------------------------------------------------------------------------

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_ESCAPES_REFUSED = (b"%2f", b"%5c", b"%00")  # encoded slash, backslash, NUL


class _HTTPError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class MemoryStorageApp:
    """Serves a ``MemoryStore`` over HTTP; mount it at ``/storage``."""

    def __init__(self, store: MemoryStore) -> None:
        self._store = store

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        try:
            key = self._key(scope)
            method = scope["method"]
            if method in ("GET", "HEAD"):
                await self._get(scope, send, key, head=method == "HEAD")
            elif method == "DELETE":
                await self._delete(scope, send, key)
            elif method == "PUT":
                await self._put(scope, receive, send, key)
            else:
                raise _HTTPError(405, "method_not_allowed", f"{method} is not supported here")
        except _HTTPError as exc:
            await _send_error(send, exc)

    @staticmethod
    def _key(scope: Scope) -> str:
        raw = scope.get("raw_path") or scope["path"].encode()
        if any(escape in raw.lower() for escape in _ESCAPES_REFUSED):
            raise _HTTPError(400, "invalid_key", "encoded slashes, backslashes or NUL in the path")
        path: str = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        try:
            return validate_key(path[1:] if path.startswith("/") else path)
        except InvalidKey as exc:
            raise _HTTPError(400, "invalid_key", str(exc)) from exc

    async def _get(self, scope: Scope, send: Send, key: str, *, head: bool) -> None:
        obj = await self._store.get(key)
        if obj is None:
            raise _HTTPError(404, "object_not_found", "no such object")
        headers = _headers(scope)
        common = [
            (b"etag", obj.etag.encode()),
            (b"cache-control", obj.cache_control.encode()),
            (b"last-modified", _http_date(obj.updated_at).encode()),
            (b"accept-ranges", b"bytes"),
        ]
        if _etag_matches(headers.get("if-none-match"), obj.etag):
            await send({"type": "http.response.start", "status": 304, "headers": common})
            await send({"type": "http.response.body", "body": b""})
            return
        status, body = 200, obj.data
        extra: list[tuple[bytes, bytes]] = []
        requested = headers.get("range")
        if requested and _RANGE.match(requested.strip()):  # other forms are ignored (RFC 9110)
            span = _byte_range(requested, len(obj.data))
            if span is None:
                raise _HTTPError(416, "range_not_satisfiable", f"object has {len(obj.data)} bytes")
            start, end = span
            status, body = 206, obj.data[start : end + 1]
            extra.append((b"content-range", f"bytes {start}-{end}/{len(obj.data)}".encode()))
        response_headers = [
            (b"content-type", obj.content_type.encode()),
            (b"content-length", str(len(body)).encode()),
            *common,
            *extra,
        ]
        await send({"type": "http.response.start", "status": status, "headers": response_headers})
        await send({"type": "http.response.body", "body": b"" if head else body})

    def _verify(self, scope: Scope, method: str, key: str) -> tuple[str, int]:
        """The signed content type and size limit of a write (or delete) URL."""
        query = urllib.parse.parse_qs(
            scope.get("query_string", b"").decode(), keep_blank_values=True
        )
        try:
            content_type = query["ct"][0]
            max_bytes = int(query["max"][0])
            expires = int(query["exp"][0])
            signature = query["sig"][0]
        except (KeyError, IndexError, ValueError) as exc:
            raise _HTTPError(403, "signature_missing", "writes need a presigned URL") from exc
        expected = self._store.signature(method, key, content_type, max_bytes, expires)
        if not hmac.compare_digest(signature, expected):
            raise _HTTPError(403, "signature_invalid", "the URL was altered or is not ours")
        if self._store.now() > expires:
            raise _HTTPError(403, "signature_expired", "the URL has expired")
        return content_type, max_bytes

    async def _delete(self, scope: Scope, send: Send, key: str) -> None:
        self._verify(scope, "DELETE", key)
        await self._store.delete(key)
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def _put(self, scope: Scope, receive: Receive, send: Send, key: str) -> None:
        content_type, max_bytes = self._verify(scope, "PUT", key)
        headers = _headers(scope)
        if headers.get("content-type", "") != content_type:
            raise _HTTPError(
                415, "content_type_mismatch", f"this upload URL takes Content-Type {content_type}"
            )
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_bytes:
            raise _HTTPError(413, "too_large", f"at most {max_bytes} bytes")
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > max_bytes:
                raise _HTTPError(413, "too_large", f"at most {max_bytes} bytes")
            if not message.get("more_body", False):
                break
        obj = await self._store.put(key, bytes(body), content_type)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"etag", obj.etag.encode()), (b"content-length", b"0")],
            }
        )
        await send({"type": "http.response.body", "body": b""})


def _headers(scope: Scope) -> dict[str, str]:
    return {
        name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]
    }


def _etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    candidates = {tag.strip().removeprefix("W/") for tag in header.split(",")}
    return "*" in candidates or etag in candidates


def _byte_range(header: str, size: int) -> tuple[int, int] | None:
    """One ``bytes=`` range as inclusive (start, end), or None when unsatisfiable."""
    match = _RANGE.match(header.strip())
    if not match or size == 0:
        return None
    first, last = match.groups()
    if not first:
        if not last or int(last) == 0:
            return None
        return max(0, size - int(last)), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or end < start:
        return None
    return start, end


def _http_date(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%a, %d %b %Y %H:%M:%S GMT")


async def _send_error(send: Send, error: _HTTPError) -> None:
    body = json.dumps({"error": {"code": error.code, "message": error.message}}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": error.status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
