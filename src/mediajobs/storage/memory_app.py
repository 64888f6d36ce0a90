"""``MemoryStorageApp``: the HTTP face of a ``MemoryStore``, a Starlette app mounted at
``/storage``.

Reads (GET/HEAD) are open, like a public bucket, with ETag / If-None-Match, Last-Modified, a
single byte range and Cache-Control. Writes (PUT) and deletes need a presigned URL whose HMAC
covers method, key, content type, max bytes and expiry; the app enforces all of them. Every
refusal has the API's error shape ``{"error": {"code", "message"}}``.
"""

from __future__ import annotations

import hmac
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mediajobs.errors import InvalidKey
from mediajobs.storage.keys import validate_key

if TYPE_CHECKING:
    from mediajobs.storage.memory import MemoryStore

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_ESCAPES_REFUSED = (b"%2f", b"%5c", b"%00")  # encoded slash, backslash, NUL
MAX_CACHE_CONTROL = 256  # characters of an upload's Cache-Control the object keeps


class _HTTPError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class MemoryStorageApp(Starlette):
    """Serves a ``MemoryStore`` over HTTP; mount it at ``/storage``."""

    def __init__(self, store: MemoryStore) -> None:
        self._store = store
        super().__init__(
            routes=[
                Route("/{key:path}", self._object, methods=["GET", "HEAD", "PUT", "DELETE"]),
            ],
            exception_handlers={_HTTPError: _error, HTTPException: _method_error},
        )

    async def _object(self, request: Request) -> Response:
        key = _key(request)
        if request.method in ("GET", "HEAD"):
            return await self._get(request, key, head=request.method == "HEAD")
        if request.method == "DELETE":
            self._verify(request, "DELETE", key)
            await self._store.delete(key)
            return Response(status_code=204)
        return await self._put(request, key)

    async def _get(self, request: Request, key: str, *, head: bool) -> Response:
        obj = await self._store.get(key)
        if obj is None:
            raise _HTTPError(404, "object_not_found", "no such object")
        common = {
            "etag": obj.etag,
            "cache-control": obj.cache_control,
            "last-modified": _http_date(obj.updated_at),
            "accept-ranges": "bytes",
        }
        if _etag_matches(request.headers.get("if-none-match"), obj.etag):
            return Response(status_code=304, headers=common)
        status, body = 200, obj.data
        requested = request.headers.get("range")
        if requested and _RANGE.match(requested.strip()):  # other forms are ignored (RFC 9110)
            span = _byte_range(requested, len(obj.data))
            if span is None:
                raise _HTTPError(416, "range_not_satisfiable", f"object has {len(obj.data)} bytes")
            start, end = span
            status, body = 206, obj.data[start : end + 1]
            common["content-range"] = f"bytes {start}-{end}/{len(obj.data)}"
        headers = {"content-type": obj.content_type, "content-length": str(len(body)), **common}
        return Response(b"" if head else body, status_code=status, headers=headers)

    def _verify(self, request: Request, method: str, key: str) -> tuple[str, int]:
        """The signed content type and size limit of a write (or delete) URL."""
        query = request.query_params
        try:
            content_type = query["ct"]
            max_bytes = int(query["max"])
            expires = int(query["exp"])
            signature = query["sig"]
        except (KeyError, ValueError) as exc:
            raise _HTTPError(403, "signature_missing", "writes need a presigned URL") from exc
        expected = self._store.signature(method, key, content_type, max_bytes, expires)
        if not hmac.compare_digest(signature, expected):
            raise _HTTPError(403, "signature_invalid", "the URL was altered or is not ours")
        if self._store.now() > expires:
            raise _HTTPError(403, "signature_expired", "the URL has expired")
        return content_type, max_bytes

    async def _put(self, request: Request, key: str) -> Response:
        content_type, max_bytes = self._verify(request, "PUT", key)
        if request.headers.get("content-type", "") != content_type:
            raise _HTTPError(
                415, "content_type_mismatch", f"this upload URL takes Content-Type {content_type}"
            )
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_bytes:
            raise _HTTPError(413, "too_large", f"at most {max_bytes} bytes")
        # The chunks are joined once at the end: one copy of the body (growing one buffer
        # copied it again at every reallocation, and once more into bytes).
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in request.stream():
                chunks.append(chunk)
                size += len(chunk)
                if size > max_bytes:
                    raise _HTTPError(413, "too_large", f"at most {max_bytes} bytes")
        except ClientDisconnect:  # nobody is left to answer; nothing is stored
            return Response(status_code=400)
        obj = await self._store.put(
            key, b"".join(chunks), content_type, cache_control=_cache_control(request)
        )
        return Response(status_code=200, headers={"etag": obj.etag})


def _cache_control(request: Request) -> str | None:
    """The upload's ``Cache-Control`` for the object (as S3 keeps a PUT's): None when absent;
    400 ``invalid_cache_control`` when longer than ``MAX_CACHE_CONTROL`` characters."""
    value = request.headers.get("cache-control")
    if value is None or not value.strip():
        return None
    if len(value) > MAX_CACHE_CONTROL:
        raise _HTTPError(
            400, "invalid_cache_control", f"Cache-Control is over {MAX_CACHE_CONTROL} characters"
        )
    return value.strip()


def _key(request: Request) -> str:
    raw: bytes = request.scope.get("raw_path") or request.scope["path"].encode()
    if any(escape in raw.lower() for escape in _ESCAPES_REFUSED):
        raise _HTTPError(400, "invalid_key", "encoded slashes, backslashes or NUL in the path")
    try:
        return validate_key(request.path_params["key"])
    except InvalidKey as exc:
        raise _HTTPError(400, "invalid_key", str(exc)) from exc


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


def _error_body(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


async def _error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, _HTTPError)
    return _error_body(exc.status, exc.code, exc.message)


async def _method_error(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (a method the route does not take), in our error shape."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        return _error_body(405, "method_not_allowed", f"{request.method} is not supported here")
    return _error_body(exc.status_code, "http_error", str(exc.detail))
