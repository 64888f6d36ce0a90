"""``RemoteMemoryStore``: the memory store of another process, over HTTP.

A worker run apart from ``mediajobs serve`` in development reads and writes the API's
objects through the API's ``/storage`` app (``memory_app``), signing writes and deletes with
the key both derive from MEDIAJOBS_JWT_SECRET.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from mediajobs.errors import ObjectNotFound, StorageDenied, StorageError, StorageUnavailable
from mediajobs.storage.base import CHUNK_SIZE, ObjectInfo, ObjectPage, StoredObject, UploadData
from mediajobs.storage.keys import validate_key
from mediajobs.storage.memory import SignedStore, read_all


class RemoteMemoryStore(SignedStore):
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
        body = await read_all(data)
        url = self._signed_url("PUT", key, content_type, len(body), int(self._clock() + 300))
        headers = {"content-type": content_type}
        if cache_control is not None:  # kept with the object (it was dropped before)
            headers["cache-control"] = cache_control
        response = await self._request("PUT", url, content=body, headers=headers)
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
