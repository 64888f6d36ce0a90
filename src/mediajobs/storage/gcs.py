"""``GCSStore``: Google Cloud Storage through google-cloud-storage, V4 signed URLs.

Credentials: a service-account JSON (``GCS_SERVICE_ACCOUNT_JSON``, the JSON itself or a
path to it), else application default credentials. ``STORAGE_EMULATOR_HOST`` points the
client at an emulator. Every SDK call runs in a thread; google errors become ours here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import google.auth
from google.api_core import exceptions as api_exceptions
from google.auth import exceptions as auth_exceptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage
from google.oauth2 import service_account
from google.resumable_media import common as resumable_common
from requests import exceptions as requests_exceptions

from mediajobs.errors import ObjectNotFound, StorageDenied, StorageError, StorageUnavailable
from mediajobs.storage.base import (
    CHUNK_SIZE,
    AsyncIterableReader,
    ObjectInfo,
    ObjectPage,
    PresignedUpload,
    StoreBase,
    StoredObject,
    UploadData,
    is_async_iterable,
    is_bytes_like,
)
from mediajobs.storage.keys import validate_key, validate_prefix

T = TypeVar("T")

UPLOAD_CHUNK = 8 * 1024 * 1024  # resumable upload chunk: what a streamed upload holds
PUBLIC_ENDPOINT = "https://storage.googleapis.com"


def load_service_account(value: str) -> service_account.Credentials:
    """Credentials from a service-account JSON document, or from a path to one."""
    text = value if value.lstrip().startswith("{") else Path(value).read_text(encoding="utf-8")
    info = json.loads(text)
    credentials: service_account.Credentials = (
        service_account.Credentials.from_service_account_info(info)  # type: ignore[no-untyped-call]
    )
    return credentials


def emulator_endpoint(host: str) -> str:
    """STORAGE_EMULATOR_HOST as a URL (it is often given as bare ``host:port``)."""
    return host if "://" in host else f"http://{host}"


def make_client(
    *, service_account_json: str | None = None, emulator_host: str | None = None
) -> tuple[storage.Client, Any]:
    """A client and the credentials that sign URLs (None when only ADC without a key)."""
    signer: Any = load_service_account(service_account_json) if service_account_json else None
    if emulator_host:
        client = storage.Client(
            project="mediajobs-emulator",
            credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
            client_options={"api_endpoint": emulator_endpoint(emulator_host)},
        )
        return client, signer
    if signer is not None:
        return storage.Client(project=signer.project_id, credentials=signer), signer
    credentials, project = google.auth.default()
    signer = credentials if hasattr(credentials, "sign_bytes") else None
    return storage.Client(project=project, credentials=credentials), signer


class GCSStore(StoreBase):
    """One bucket. Presigned uploads are V4 signed PUTs that bind the content type and
    ``x-goog-content-length-range`` (GCS enforces both)."""

    def __init__(
        self,
        client: storage.Client,
        bucket: str,
        *,
        signer: Any = None,
        provider: str = "gcs",
        public_base_url: str | None = None,
        signed_url_endpoint: str | None = None,
        upload_chunk: int = UPLOAD_CHUNK,
    ) -> None:
        super().__init__(provider, bucket, public_base_url)
        self._client = client
        self._blobs = client.bucket(bucket)
        self._signer = signer
        self._endpoint = (signed_url_endpoint or PUBLIC_ENDPOINT).rstrip("/")
        self._upload_chunk = upload_chunk

    async def _call(self, call: Callable[[], T]) -> T:
        with _translated():
            return await asyncio.to_thread(call)

    async def upload(
        self, key: str, data: UploadData, content_type: str, *, cache_control: str | None = None
    ) -> StoredObject:
        validate_key(key)
        blob = self._blobs.blob(key, chunk_size=self._upload_chunk)
        if cache_control:
            blob.cache_control = cache_control
        if is_bytes_like(data):
            body = bytes(data)  # type: ignore[arg-type]
            await self._call(lambda: blob.upload_from_string(body, content_type=content_type))
        else:
            source: Any = data
            if is_async_iterable(data):
                source = AsyncIterableReader(data, asyncio.get_running_loop())  # type: ignore[arg-type]
            await self._call(
                lambda: blob.upload_from_file(source, content_type=content_type, rewind=False)
            )
        return StoredObject(self.locator(key), int(blob.size or 0), content_type, blob.etag)

    def _sign(self, key: str, **options: Any) -> str:
        if self._signer is None:
            raise StorageDenied(
                "signed URLs need service-account credentials (GCS_SERVICE_ACCOUNT_JSON)"
            )
        url: str = self._blobs.blob(key).generate_signed_url(
            version="v4",
            credentials=self._signer,
            api_access_endpoint=self._endpoint,
            **options,
        )
        return url

    async def presign_upload(
        self, key: str, content_type: str, max_bytes: int, expires_in: float = 900.0
    ) -> PresignedUpload:
        validate_key(key)
        headers = {"Content-Type": content_type, "x-goog-content-length-range": f"0,{max_bytes}"}
        url = await self._call(
            lambda: self._sign(
                key,
                method="PUT",
                expiration=timedelta(seconds=expires_in),
                content_type=content_type,
                headers={"x-goog-content-length-range": headers["x-goog-content-length-range"]},
            )
        )
        return PresignedUpload(
            locator=self.locator(key),
            url=url,
            method="PUT",
            headers=headers,
            expires_at=datetime.now(UTC) + timedelta(seconds=expires_in),
            max_bytes=max_bytes,
            content_type=content_type,
        )

    async def url(self, key: str, *, expires_in: float = 3600.0) -> str:
        public = self._public_url(validate_key(key))
        if public is not None:
            return public
        return await self._call(
            lambda: self._sign(key, method="GET", expiration=timedelta(seconds=expires_in))
        )

    async def open(self, key: str, *, chunk_size: int = CHUNK_SIZE) -> AsyncIterator[bytes]:
        validate_key(key)
        blob = await self._call(lambda: self._blobs.get_blob(key))
        if blob is None:
            raise ObjectNotFound(f"no object {key!r}")
        size, generation = int(blob.size or 0), blob.generation
        for start in range(0, size, chunk_size):
            end = min(start + chunk_size, size) - 1
            chunk: bytes = await self._call(
                lambda start=start, end=end: blob.download_as_bytes(  # type: ignore[misc]
                    start=start, end=end, if_generation_match=generation, checksum=None
                )
            )
            yield chunk

    async def download(self, key: str) -> bytes:
        validate_key(key)
        return await self._call(lambda: self._blobs.blob(key).download_as_bytes())

    async def head(self, key: str) -> ObjectInfo | None:
        validate_key(key)
        blob = await self._call(lambda: self._blobs.get_blob(key))
        return None if blob is None else _info(blob)

    async def delete(self, key: str) -> None:
        validate_key(key)
        with contextlib.suppress(ObjectNotFound):
            await self._call(lambda: self._blobs.blob(key).delete())

    async def list(
        self, prefix: str = "", cursor: str | None = None, limit: int = 1000
    ) -> ObjectPage:
        validate_prefix(prefix)
        if not 1 <= limit <= 1000:
            raise ValueError("limit must be between 1 and 1000")

        def page() -> ObjectPage:
            # The cursor is the last key returned; `start_offset` is inclusive, so ask for
            # the cursor itself, `limit` more, and one to tell whether a next page exists.
            # (Filtering again here keeps this right on servers that ignore the offset.)
            listing = self._client.list_blobs(
                self._bucket_name,
                prefix=prefix or None,
                start_offset=cursor,
                max_results=limit + 2,
            )
            items: list[ObjectInfo] = []
            for blob in listing:
                if cursor is not None and blob.name <= cursor:
                    continue
                if len(items) == limit:
                    return ObjectPage(items, items[-1].key)
                items.append(_info(blob))
            return ObjectPage(items, None)

        return await self._call(page)

    async def close(self) -> None:
        await asyncio.to_thread(self._client.close)


def _info(blob: Any) -> ObjectInfo:
    return ObjectInfo(
        key=blob.name,
        size=int(blob.size or 0),
        content_type=blob.content_type,
        etag=blob.etag,
        updated_at=blob.updated,
    )


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    """google-cloud's errors, once, as ours."""
    try:
        yield
    except StorageError:
        raise
    except api_exceptions.NotFound as exc:
        raise ObjectNotFound(str(exc)) from exc
    except (api_exceptions.Forbidden, api_exceptions.Unauthorized) as exc:
        raise StorageDenied(str(exc)) from exc
    except (auth_exceptions.DefaultCredentialsError, auth_exceptions.RefreshError) as exc:
        raise StorageDenied(str(exc)) from exc
    except api_exceptions.PreconditionFailed as exc:
        raise StorageUnavailable(f"the object changed while it was read: {exc}") from exc
    except (
        api_exceptions.GoogleAPIError,
        auth_exceptions.TransportError,
        requests_exceptions.RequestException,
        resumable_common.InvalidResponse,
        ConnectionError,
    ) as exc:
        raise StorageUnavailable(str(exc)) from exc
