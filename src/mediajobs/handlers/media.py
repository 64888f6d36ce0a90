"""Media jobs: process an upload into variants, review it, delete and purge it.

``media.process``  stream the private source from its store (real byte progress), decode and
                   encode in the imaging pool (a step per variant), upload the variants under
                   keys derived from the media id (a re-run overwrites, never orphans), then
                   in one transaction mark the item ready (or in_review, enqueueing
                   ``media.review``) and, for a replacement that is ready, cut over.
``media.review``   the review gate: provider ``disabled`` fails retryable-on-request with
                   ``review_provider_disabled``; ``webhook`` POSTs the preview and expects
                   ``{allowed, reason}`` (timeouts and 5xx retry). Allowed -> ready (and cut
                   over); refused -> rejected, and a replaced item stays live.
``media.delete``   hide at once (soft delete) and schedule ``media.purge`` after the undo
                   window, in one transaction. Idempotent.
``media.purge``    after the window, delete the source and every variant through each
                   locator's own store, unless the item was restored.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx

from mediajobs.db.media import MediaRecord, MediaRepository, MediaStatus
from mediajobs.db.policies import SitePolicies, SitePolicy
from mediajobs.errors import (
    ImageRejected,
    JobCancelled,
    JobFailed,
    LeaseLost,
    ObjectNotFound,
    Retry,
    StorageError,
)
from mediajobs.handlers.imaging_pool import ImagingFailed, ImagingPool
from mediajobs.imaging.formats import corrected_filename
from mediajobs.imaging.pipeline import ProcessedImage
from mediajobs.queue import kinds
from mediajobs.queue.models import Job, JobSpec
from mediajobs.queue.registry import HandlerRegistry, JobContext
from mediajobs.storage import StoreRegistry
from mediajobs.storage.base import Locator
from mediajobs.storage.keys import variant_key
from mediajobs.storage.urls import variant_urls
from mediajobs.types import JSON

VARIANT_CACHE_CONTROL = "public, max-age=31536000, immutable"

# Progress of media.process: download 0..0.35, decode 0.45, variants ..0.75, uploads ..0.97.
_DOWNLOAD, _DECODED, _ENCODED, _UPLOADED = 0.35, 0.45, 0.75, 0.97


def _media_id(ctx: JobContext, job: Job) -> uuid.UUID:
    """The job's media id, also named in the worker's log line about the job's outcome."""
    try:
        media_id = uuid.UUID(str(job.payload["mediaId"]))
    except (KeyError, ValueError):
        raise JobFailed("the job payload has no valid mediaId", code="invalid_payload") from None
    ctx.describe(mediaId=str(media_id))
    return media_id


def _still_hidden(record: MediaRecord, hidden_at: str) -> bool:
    """The item is still in the delete that happened at ``hidden_at``."""
    return (
        record.status is MediaStatus.DELETED
        and record.deleted_at is not None
        and record.deleted_at.isoformat() == hidden_at
    )


def _now() -> str:
    return datetime.now(UTC).isoformat()


class MediaHandlers:
    """The media job handlers. Everything they use comes in through the constructor, built
    and closed by the worker's composition root (``cli.open_worker``): the repositories, the
    stores, the imaging pool and the HTTP client of the review webhook."""

    def __init__(
        self,
        *,
        media: MediaRepository,
        policies: SitePolicies,
        stores: StoreRegistry,
        imaging: ImagingPool,
        http: httpx.AsyncClient,
        review_webhook_url: str | None = None,
        review_webhook_secret: str | None = None,
    ) -> None:
        self.media = media
        self.policies = policies
        self.stores = stores
        self.imaging = imaging
        self.http = http
        self.review_webhook_url = review_webhook_url
        self.review_webhook_secret = review_webhook_secret

    def register(self, registry: HandlerRegistry) -> HandlerRegistry:
        """Register the four media kinds on ``registry``."""
        registry.register(kinds.MEDIA_PROCESS, self.process)
        registry.register(kinds.MEDIA_REVIEW, self.review)
        registry.register(kinds.MEDIA_DELETE, self.delete)
        registry.register(kinds.MEDIA_PURGE, self.purge)
        return registry

    # -- media.process -----------------------------------------------------------------

    async def process(self, ctx: JobContext, job: Job) -> JSON:
        media_id = _media_id(ctx, job)
        media = self.media
        try:
            return await self._process(ctx, job, media, media_id)
        except ImageRejected as exc:
            await media.fail(media_id, {"code": exc.code, "message": exc.message})
            raise JobFailed(exc.message, code=exc.code) from None
        except ImagingFailed as exc:
            await media.fail(media_id, {"code": exc.code, "message": str(exc)})
            raise JobFailed(str(exc), code=exc.code) from None
        except LeaseLost:
            raise  # another attempt owns the item now
        except JobCancelled as exc:
            await media.fail(media_id, {"code": "cancelled", "message": str(exc)})
            raise
        except JobFailed as exc:
            if exc.code != "media_not_found":
                await media.fail(media_id, {"code": exc.code, "message": exc.message})
            raise
        except Exception as exc:
            if job.attempt >= job.max_attempts:  # out of retries: the item failed too
                code = exc.code if isinstance(exc, StorageError) else "internal_error"
                await media.fail(media_id, {"code": code, "message": str(exc)})
            raise

    async def _process(
        self, ctx: JobContext, job: Job, media: MediaRepository, media_id: uuid.UUID
    ) -> JSON:
        record = await media.get(media_id, job.owner_id)
        if record is None:
            raise JobFailed(f"media {media_id} not found", code="media_not_found")
        ctx.describe(fileName=record.original_filename)
        if record.job_id == job.id and record.status in (MediaStatus.READY, MediaStatus.IN_REVIEW):
            # An earlier attempt of this job finished the item and died before completing
            # the job: answer as it would have.
            return await self._result(record)
        started = await media.start_processing(media_id, job.id)
        if started is None:
            raise JobFailed(f"media {media_id} is {record.status}", code="media_not_processable")
        policy = await self.policies.load()
        data = await self._download(ctx, started, policy)
        ctx.raise_if_cancelled()
        processed = await self._imaging_steps(ctx, started, policy, data)
        del data
        ctx.raise_if_cancelled()
        variants = await self._upload_variants(ctx, started, processed)
        duplicate = await media.duplicate_of(job.owner_id, media_id, processed.sha256)
        review_on = policy.photo_review_enabled
        status = MediaStatus.IN_REVIEW if review_on else MediaStatus.READY
        values: dict[str, Any] = {
            "detected_type": processed.detected_type,
            # The item's file name says what the bytes are (IMG_0001.HEIC -> IMG_0001.jpg).
            "original_filename": corrected_filename(
                record.original_filename, processed.detected_type
            )
            if record.original_filename
            else None,
            "bytes": processed.source_bytes,
            "width": processed.width,
            "height": processed.height,
            "variants": variants,
            "blur_data_url": processed.blur_data_url,
            "exif": processed.exif,
            "gps": processed.gps,
            "sha256": processed.sha256,
            "duplicate_of": duplicate,
            "review": None,
        }
        async with media.transaction() as conn:
            done = await media.finish_processing(media_id, status=status, values=values, conn=conn)
            if done is None:
                pass
            elif review_on:
                await ctx.queue.enqueue(
                    JobSpec(
                        kinds.MEDIA_REVIEW,
                        job.owner_id,
                        {"mediaId": str(media_id)},
                        idempotency_key=f"review:{media_id}:{job.id}",
                    ),
                    conn=conn,
                )
            else:
                await self._cut_over(ctx, done, policy, conn)
        if done is None:  # deleted while it was processed: its variants must not outlive it
            for variant in variants.values():
                assert isinstance(variant, dict)
                await self.stores.delete(Locator.parse(str(variant["locator"])))
            raise JobFailed(f"media {media_id} was deleted while processing", code="media_deleted")
        return await self._result(done)

    async def _download(self, ctx: JobContext, record: MediaRecord, policy: SitePolicy) -> bytes:
        locator = record.source
        info = await self.stores.head(locator)
        if info is None:
            raise JobFailed("the uploaded object is missing", code="source_missing")
        if info.size == 0:
            raise ImageRejected("empty_file", "the file is empty")
        if info.size > policy.max_source_bytes:
            raise ImageRejected(
                "file_too_large",
                f"{info.size} bytes is over the limit of {policy.max_source_bytes}",
            )
        buffer = bytearray()
        try:
            async for chunk in self.stores.open(locator, chunk_size=256 * 1024):
                buffer += chunk
                if len(buffer) > policy.max_source_bytes:
                    raise ImageRejected(
                        "file_too_large", f"over the limit of {policy.max_source_bytes} bytes"
                    )
                await ctx.progress(
                    _DOWNLOAD * min(1.0, len(buffer) / info.size), "downloading source"
                )
                ctx.raise_if_cancelled()
        except ObjectNotFound:
            raise JobFailed("the uploaded object is missing", code="source_missing") from None
        return bytes(buffer)

    async def _imaging_steps(
        self, ctx: JobContext, record: MediaRecord, policy: SitePolicy, data: bytes
    ) -> ProcessedImage:
        image_policy = policy.image_policy()
        count = len(image_policy.variants)
        encoded = 0
        reports: list[asyncio.Task[None]] = []

        def on_step(step: str, name: str | None) -> None:
            nonlocal encoded
            if step == "decoded":
                fraction, message = _DECODED, "decoded"
            else:
                encoded += 1
                fraction = _DECODED + (_ENCODED - _DECODED) * encoded / count
                message = f"variant {name} encoded"
            reports.append(asyncio.ensure_future(ctx.progress(fraction, message)))

        try:
            return await self.imaging.process(
                data,
                image_policy,
                declared_type=record.declared_type,
                filename=record.original_filename,
                on_step=on_step,
            )
        finally:
            for outcome in await asyncio.gather(*reports, return_exceptions=True):
                if isinstance(outcome, LeaseLost):
                    raise outcome

    async def _upload_variants(
        self, ctx: JobContext, record: MediaRecord, processed: ProcessedImage
    ) -> dict[str, JSON]:
        """Upload each distinct variant under its deterministic key; variants the same size
        as a larger one share its object."""
        store = self.stores.active
        stored: dict[str, JSON] = {}
        locators: dict[str, str] = {}
        distinct = [v for v in processed.variants if v.data]
        for done, variant in enumerate(distinct, start=1):
            key = variant_key(record.owner_id, record.id, variant.name)
            obj = await store.upload(
                key, variant.data, "image/webp", cache_control=VARIANT_CACHE_CONTROL
            )
            locators[variant.name] = str(obj.locator)
            fraction = _ENCODED + (_UPLOADED - _ENCODED) * done / len(distinct)
            await ctx.progress(fraction, f"variant {variant.name} uploaded")
        sizes = {v.name: v for v in processed.variants}
        for variant in processed.variants:
            source = sizes[variant.same_as] if variant.same_as else variant
            stored[variant.name] = {
                "locator": locators[source.name],
                "width": variant.width,
                "height": variant.height,
                "bytes": source.size,
            }
        return stored

    async def _result(self, record: MediaRecord) -> JSON:
        variants, url = await variant_urls(record.variants, self.stores)
        return {
            "mediaId": str(record.id),
            "status": record.status.value,
            "width": record.width,
            "height": record.height,
            "detectedType": record.detected_type,
            "url": url,
            "variants": variants,
            "blurDataURL": record.blur_data_url,
            "duplicateOf": str(record.duplicate_of) if record.duplicate_of else None,
            "replaces": str(record.replaces) if record.replaces else None,
        }

    async def _cut_over(
        self, ctx: JobContext, ready: MediaRecord, policy: SitePolicy, conn: Any
    ) -> None:
        """Inside the caller's transaction: a ready replacement takes its predecessor's
        place, and the predecessor's purge is scheduled."""
        old = await self.media.cut_over(ready, undo_window=policy.undo_window_seconds, conn=conn)
        if old is not None:
            await self._schedule_purge(ctx, old, conn)

    async def _schedule_purge(self, ctx: JobContext, deleted: MediaRecord, conn: Any) -> None:
        assert deleted.deleted_at is not None
        assert deleted.purge_after is not None
        await ctx.queue.enqueue(
            JobSpec(
                kinds.MEDIA_PURGE,
                deleted.owner_id,
                {"mediaId": str(deleted.id)},
                run_at=deleted.purge_after,
                idempotency_key=f"purge:{deleted.id}:{deleted.deleted_at.timestamp()}",
            ),
            conn=conn,
        )

    # -- media.review ------------------------------------------------------------------

    async def review(self, ctx: JobContext, job: Job) -> JSON:
        media_id = _media_id(ctx, job)
        media = self.media
        record = await media.get(media_id, job.owner_id)
        if record is None:
            raise JobFailed(f"media {media_id} not found", code="media_not_found")
        ctx.describe(fileName=record.original_filename)
        if record.status is not MediaStatus.IN_REVIEW:
            return {"mediaId": str(media_id), "status": record.status.value, "skipped": True}
        policy = await self.policies.load()
        provider = policy.photo_review_provider
        reason: str | None
        try:
            if not policy.photo_review_enabled:
                allowed, reason, provider = True, "review turned off", "none"
            elif provider == "webhook" and self.review_webhook_url:
                allowed, reason = await self._ask_webhook(record)
            elif provider == "webhook":
                raise JobFailed(
                    "the webhook review provider needs MEDIAJOBS_REVIEW_WEBHOOK_URL",
                    code="review_webhook_not_configured",
                    retryable=True,
                )
            else:
                raise JobFailed(
                    "photo review is on but no review provider is configured",
                    code="review_provider_disabled",
                    retryable=True,
                )
        except (JobFailed, Retry) as exc:
            if isinstance(exc, JobFailed) or job.attempt >= job.max_attempts:
                # The review stopped for good: the item says why, and which job to retry.
                error = {"status": "error", "provider": provider, "code": exc.code}
                await media.set_review(media_id, {**error, "jobId": str(job.id), "at": _now()})
            raise
        review: dict[str, JSON] = {
            "status": "allowed" if allowed else "rejected",
            "provider": provider,
            "reason": reason,
            "at": _now(),
        }
        async with media.transaction() as conn:
            status = MediaStatus.READY if allowed else MediaStatus.REJECTED
            done = await media.set_review(media_id, review, status=status, conn=conn)
            if done is None:
                return {"mediaId": str(media_id), "skipped": True}
            if allowed:
                await self._cut_over(ctx, done, policy, conn)
        return {
            "mediaId": str(media_id),
            "status": done.status.value,
            "allowed": allowed,
            "reason": reason,
        }

    async def _ask_webhook(self, record: MediaRecord) -> tuple[bool, str | None]:
        url = self.review_webhook_url
        assert url is not None
        preview = record.variants.get("preview") or max(
            record.variants.values(), key=lambda v: int(v["width"]) * int(v["height"])
        )
        body = json.dumps(
            {
                "mediaId": str(record.id),
                "ownerId": record.owner_id,
                "purpose": record.purpose,
                "previewURL": await self.stores.url(Locator.parse(preview["locator"])),
                "width": record.width,
                "height": record.height,
                "detectedType": record.detected_type,
                "altText": record.alt_text,
            }
        ).encode()
        headers = {"content-type": "application/json"}
        if self.review_webhook_secret:
            digest = hmac.new(self.review_webhook_secret.encode(), body, hashlib.sha256).hexdigest()
            headers["x-mediajobs-signature"] = f"sha256={digest}"
        try:
            response = await self.http.post(url, content=body, headers=headers)
        except httpx.TimeoutException:
            raise Retry("the review webhook timed out", code="review_timeout") from None
        except httpx.HTTPError as exc:
            raise Retry(f"the review webhook failed: {exc}", code="review_unavailable") from None
        if response.status_code >= 500 or response.status_code == 429:
            raise Retry(
                f"the review webhook answered {response.status_code}", code="review_unavailable"
            )
        if response.status_code >= 400:
            raise JobFailed(
                f"the review webhook refused the request ({response.status_code})",
                code="review_webhook_refused",
                retryable=True,
            )
        try:
            answer = response.json()
            allowed = answer["allowed"]
            reason = answer.get("reason")
        except (ValueError, KeyError, TypeError, AttributeError):
            raise Retry(
                "the review webhook answered without {allowed, reason}",
                code="review_invalid_response",
            ) from None
        if not isinstance(allowed, bool) or not (reason is None or isinstance(reason, str)):
            raise Retry(
                "the review webhook answer has the wrong types", code="review_invalid_response"
            )
        return allowed, reason

    # -- media.delete and media.purge --------------------------------------------------

    async def delete(self, ctx: JobContext, job: Job) -> JSON:
        media_id = _media_id(ctx, job)
        media = self.media
        hidden_at = job.payload.get("deletedAt")
        policy = await self.policies.load()
        async with media.transaction() as conn:
            if hidden_at is None:  # enqueued on its own: hide it now
                record = await media.soft_delete(
                    media_id, job.owner_id, undo_window=policy.undo_window_seconds, conn=conn
                )
            else:  # the API hid it when it enqueued this job
                record = await media.get(media_id, job.owner_id, conn=conn)
            if record is None:
                raise JobFailed(f"media {media_id} not found", code="media_not_found")
            if hidden_at is not None and not _still_hidden(record, str(hidden_at)):
                # Restored (or deleted again, which has its own job) before this ran: the
                # delete this job stood for is over.
                return {"mediaId": str(media_id), "status": record.status.value, "purged": False}
            if record.purged_at is None:
                await self._schedule_purge(ctx, record, conn)
        return {
            "mediaId": str(media_id),
            "status": record.status.value,
            "purgeAfter": record.purge_after.isoformat() if record.purge_after else None,
            "purged": record.purged_at is not None,
        }

    async def purge(self, ctx: JobContext, job: Job) -> JSON:
        media_id = _media_id(ctx, job)
        media = self.media
        record = await media.claim_purge(media_id)
        if record is None:  # restored, purged already, or deleted again with a later window
            return {"mediaId": str(media_id), "purged": False}
        locators = sorted(record.locators(), key=str)
        for done, locator in enumerate(locators, start=1):
            await self.stores.delete(locator)
            await ctx.progress(done / len(locators), f"deleted {done} of {len(locators)}")
        await media.mark_purged(media_id)
        return {"mediaId": str(media_id), "purged": True, "objects": len(locators)}
