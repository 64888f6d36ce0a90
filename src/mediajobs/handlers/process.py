"""``media.process``: an upload into variants.

Stream the private source from its store (real byte progress), decode and encode in the
imaging pool (a step per variant), upload the variants under keys derived from the media id
(a re-run overwrites, never orphans), then in one transaction mark the item ready (or
in_review, enqueueing ``media.review``) and, for a replacement that is ready, cut over.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from mediajobs.db.media import MediaRecord, MediaRepository, MediaStatus
from mediajobs.db.policies import SitePolicies, SitePolicy
from mediajobs.errors import (
    ImageRejected,
    JobCancelled,
    JobFailed,
    LeaseLost,
    ObjectNotFound,
    StorageError,
)
from mediajobs.handlers.imaging_pool import ImagingFailed, ImagingPool
from mediajobs.handlers.jobs import cut_over, media_id_of
from mediajobs.handlers.understand import enqueue_understanding
from mediajobs.imaging.formats import corrected_filename
from mediajobs.imaging.pipeline import ProcessedImage
from mediajobs.queue import kinds
from mediajobs.queue.models import Job, JobSpec
from mediajobs.queue.registry import JobContext
from mediajobs.realtime import Event, EventRecorder
from mediajobs.storage import StoreRegistry
from mediajobs.storage.base import Locator
from mediajobs.storage.keys import variant_key
from mediajobs.storage.urls import variant_urls
from mediajobs.types import JSON

VARIANT_CACHE_CONTROL = "public, max-age=31536000, immutable"

# Progress of media.process: download 0..0.35, decode 0.45, variants ..0.75, uploads ..0.97.
_DOWNLOAD, _DECODED, _ENCODED, _UPLOADED = 0.35, 0.45, 0.75, 0.97


class ProcessHandler:
    """``media.process``: download, decode and encode in the imaging pool, upload the
    variants, and move the item to ready or in_review."""

    def __init__(
        self,
        *,
        media: MediaRepository,
        policies: SitePolicies,
        stores: StoreRegistry,
        imaging: ImagingPool,
        events: EventRecorder,
    ) -> None:
        self.media = media
        self.policies = policies
        self.stores = stores
        self.imaging = imaging
        self.events = events  # collection_updated when an attached item becomes ready

    async def __call__(self, ctx: JobContext, job: Job) -> JSON:
        media_id = media_id_of(ctx, job)
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
        recorded: list[Event] = []
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
                old = await cut_over(ctx, media, done, policy.undo_window_seconds, conn)
                await enqueue_understanding(ctx.queue, conn, job.owner_id, [media_id])
                change = "ready" if old is None else "replaced"
                recorded = await self.events.collections_changed(conn, media_id, change, job.id)
        await self.events.committed(recorded)
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
