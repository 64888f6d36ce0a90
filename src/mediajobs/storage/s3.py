"""``S3Store``: AWS S3 and S3-compatible services (Lightsail object storage, MinIO, moto)
through boto3. Every boto3 call runs in a thread; botocore errors become ours here."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    PartialCredentialsError,
)

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

PART_SIZE = 5 * 1024 * 1024  # multipart part size (S3's minimum): memory per part in flight
_MISSING = {"404", "NoSuchKey", "NotFound"}
_DENIED = {
    "403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "NoSuchBucket",
    "AllAccessDisabled", "AccountProblem", "ExpiredToken", "InvalidToken",
}  # fmt: skip


def make_client(
    *,
    endpoint_url: str | None = None,
    region: str | None = None,
    force_path_style: bool = False,
    profile: str | None = None,
) -> Any:
    """A boto3 S3 client: SigV4, path-style addressing on request (Lightsail, MinIO, moto),
    bounded retries and timeouts. Credentials come from boto3's usual chain."""
    session = boto3.session.Session(profile_name=profile)
    return session.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=region,
        config=Config(
            signature_version="s3v4",
            s3={"addressing_style": "path" if force_path_style else "auto"},
            retries={"max_attempts": 4, "mode": "standard"},
            connect_timeout=5,
            read_timeout=60,
        ),
    )


class S3Store(StoreBase):
    """One bucket. ``provider`` is the name its locators carry ("s3", "lightsail", ...);
    uploads are presigned as POST policies (size and type enforced by S3) unless
    ``upload_method="PUT"``."""

    def __init__(
        self,
        client: Any,
        bucket: str,
        *,
        provider: str = "s3",
        public_base_url: str | None = None,
        upload_method: str = "POST",
        part_size: int = PART_SIZE,
    ) -> None:
        if upload_method not in ("POST", "PUT"):
            raise ValueError("upload_method is POST or PUT")
        super().__init__(provider, bucket, public_base_url)
        self._client = client
        self._upload_method = upload_method
        self._transfer = TransferConfig(
            multipart_threshold=part_size,
            multipart_chunksize=part_size,
            max_concurrency=2,
            io_chunksize=256 * 1024,
        )
        # s3transfer's own knob (boto3's constructor does not take it): a streamed upload
        # holds at most this many parts in memory.
        self._transfer.max_in_memory_upload_chunks = 2

    async def _call(self, call: Callable[[], T]) -> T:
        with _translated():
            return await asyncio.to_thread(call)

    async def upload(
        self, key: str, data: UploadData, content_type: str, *, cache_control: str | None = None
    ) -> StoredObject:
        validate_key(key)
        extra = {"ContentType": content_type}
        if cache_control:
            extra["CacheControl"] = cache_control
        if is_bytes_like(data):
            body = bytes(data)  # type: ignore[arg-type]
            reply = await self._call(
                lambda: self._client.put_object(
                    Bucket=self._bucket_name, Key=key, Body=body, **extra
                )
            )
            return StoredObject(self.locator(key), len(body), content_type, reply.get("ETag"))
        source: Any = data
        if is_async_iterable(data):
            source = AsyncIterableReader(data, asyncio.get_running_loop())  # type: ignore[arg-type]
        await self._call(
            lambda: self._client.upload_fileobj(
                source, self._bucket_name, key, ExtraArgs=extra, Config=self._transfer
            )
        )
        info = await self.head(key)
        if info is None:
            raise StorageUnavailable(f"{key!r} is missing right after its upload")
        return StoredObject(self.locator(key), info.size, content_type, info.etag)

    async def presign_upload(
        self, key: str, content_type: str, max_bytes: int, expires_in: float = 900.0
    ) -> PresignedUpload:
        validate_key(key)
        expires_at = datetime.now(UTC) + timedelta(seconds=expires_in)
        if self._upload_method == "POST":
            post = await self._call(
                lambda: self._client.generate_presigned_post(
                    Bucket=self._bucket_name,
                    Key=key,
                    Fields={"Content-Type": content_type},
                    Conditions=[
                        {"Content-Type": content_type},
                        ["content-length-range", 0, max_bytes],
                    ],
                    ExpiresIn=int(expires_in),
                )
            )
            return PresignedUpload(
                locator=self.locator(key),
                url=post["url"],
                method="POST",
                headers={},
                fields=dict(post["fields"]),
                expires_at=expires_at,
                max_bytes=max_bytes,
                content_type=content_type,
            )
        url = await self._call(
            lambda: self._client.generate_presigned_url(
                "put_object",
                Params={"Bucket": self._bucket_name, "Key": key, "ContentType": content_type},
                ExpiresIn=int(expires_in),
            )
        )
        return PresignedUpload(
            locator=self.locator(key),
            url=url,
            method="PUT",
            headers={"Content-Type": content_type},
            expires_at=expires_at,
            max_bytes=max_bytes,  # a presigned PUT cannot bind a size range; POST can
            content_type=content_type,
        )

    async def url(self, key: str, *, expires_in: float = 3600.0) -> str:
        public = self._public_url(validate_key(key))
        if public is not None:
            return public
        url: str = await self._call(
            lambda: self._client.generate_presigned_url(
                "get_object",
                Params={"Bucket": self._bucket_name, "Key": key},
                ExpiresIn=int(expires_in),
            )
        )
        return url

    async def open(self, key: str, *, chunk_size: int = CHUNK_SIZE) -> AsyncIterator[bytes]:
        validate_key(key)
        reply = await self._call(lambda: self._client.get_object(Bucket=self._bucket_name, Key=key))
        body = reply["Body"]
        try:
            while True:
                chunk: bytes = await self._call(lambda: body.read(chunk_size))
                if not chunk:
                    return
                yield chunk
        finally:
            body.close()

    async def download(self, key: str) -> bytes:
        return b"".join([chunk async for chunk in self.open(key)])

    async def head(self, key: str) -> ObjectInfo | None:
        validate_key(key)
        try:
            reply = await self._call(
                lambda: self._client.head_object(Bucket=self._bucket_name, Key=key)
            )
        except ObjectNotFound:
            return None
        return ObjectInfo(
            key=key,
            size=int(reply["ContentLength"]),
            content_type=reply.get("ContentType"),
            etag=reply.get("ETag"),
            updated_at=reply.get("LastModified"),
        )

    async def delete(self, key: str) -> None:
        validate_key(key)
        await self._call(lambda: self._client.delete_object(Bucket=self._bucket_name, Key=key))

    async def list(
        self, prefix: str = "", cursor: str | None = None, limit: int = 1000
    ) -> ObjectPage:
        validate_prefix(prefix)
        if not 1 <= limit <= 1000:
            raise ValueError("limit must be between 1 and 1000")
        params: dict[str, Any] = {"Bucket": self._bucket_name, "Prefix": prefix, "MaxKeys": limit}
        if cursor:
            params["ContinuationToken"] = cursor
        reply = await self._call(lambda: self._client.list_objects_v2(**params))
        items = [
            ObjectInfo(
                key=entry["Key"],
                size=int(entry["Size"]),
                content_type=None,  # ListObjectsV2 does not return it
                etag=entry.get("ETag"),
                updated_at=entry.get("LastModified"),
            )
            for entry in reply.get("Contents", [])
        ]
        return ObjectPage(
            items, reply.get("NextContinuationToken") if reply.get("IsTruncated") else None
        )

    async def close(self) -> None:
        await asyncio.to_thread(self._client.close)


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    """botocore's errors, once, as ours."""
    try:
        yield
    except StorageError:
        raise
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
        message = f"{code or status}: {error.get('Message', exc)}"
        if code in _MISSING or (status == "404" and code != "NoSuchBucket"):
            raise ObjectNotFound(message) from exc
        if code in _DENIED or status in ("401", "403"):
            raise StorageDenied(message) from exc
        raise StorageUnavailable(message) from exc
    except (NoCredentialsError, PartialCredentialsError) as exc:
        raise StorageDenied(str(exc)) from exc
    except BotoCoreError as exc:  # connection refused, timeouts, bad responses
        raise StorageUnavailable(str(exc)) from exc
