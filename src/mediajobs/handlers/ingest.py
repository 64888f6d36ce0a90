"""Bulk ingest (docs/ingest.md): ``ingest.scan`` walks a source into the checkpoint and
queues batches; ``ingest.batch`` imports one batch of files.

A scan reads the source as a stream (``ingest.source.scan_source``) in batches of up to
10,000 files, each sent when full or 2 s old. Each is ONE transaction: its files are
upserted into ``ingest_files`` (known, unchanged files are skipped in SQL), the new and
changed ones are split into
``ingest.batch`` jobs of the run's batch size, each job's id is written into its files, and
the run's counters grow. A scan that dies is simply run again (the queue retries it): the
files it recorded are skipped at database speed.

A batch records an attempt on each of its files (committed before any decode), then works
on up to one file per imaging process at once: check the file is settled, read it, make the
derivatives in the crash-isolated imaging pool (at ingest priority: an upload waiting for a
process goes first), and upload the original, the thumbnail and the watermarked preview
under keys derived from the file's media id (a rerun overwrites the same keys). Then ONE
transaction writes the batch's media rows and file statuses, and one ``ingest_progress``
event goes to the owner's stream.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from mediajobs.db.ingest import (
    FileOutcome,
    IngestFile,
    IngestRepository,
    IngestRun,
    IngestStatus,
)
from mediajobs.db.media import IngestedMedia, MediaRepository
from mediajobs.db.policies import SitePolicies
from mediajobs.errors import ImageRejected, JobFailed, LeaseLost, MediaJobsError
from mediajobs.handlers.imaging_pool import (
    ImagingCrashed,
    ImagingFailed,
    ImagingOutOfMemory,
    ImagingPool,
    ImagingTimeout,
)
from mediajobs.imaging.catalog import CatalogImage, CatalogProfile
from mediajobs.imaging.watermark import WatermarkLogoInvalid
from mediajobs.ingest.runs import queue_batches
from mediajobs.ingest.scan import ScanCounts
from mediajobs.ingest.source import (
    FileChanged,
    FileState,
    FileTooLarge,
    FileUnreadable,
    FileVanished,
    ScanBatch,
    Source,
    SourceInvalid,
    check_file,
    parse_source,
    read_file,
    scan_source,
)
from mediajobs.queue import kinds
from mediajobs.queue.models import Job
from mediajobs.queue.registry import HandlerRegistry, JobContext
from mediajobs.realtime import EventRecorder
from mediajobs.realtime.events import ingest_progress_event
from mediajobs.storage import StoreRegistry
from mediajobs.storage.base import Locator
from mediajobs.storage.keys import catalog_keys
from mediajobs.types import JSON

log = logging.getLogger(__name__)

CATALOG_PURPOSE = "catalog"
# Ingested keys are stable per item while a changed source file makes a new version under
# the same keys, so caches may keep a derivative an hour, not forever.
CATALOG_CACHE_CONTROL = "public, max-age=3600"
_CRASHES = (ImagingCrashed, ImagingOutOfMemory, ImagingTimeout)


@dataclass(frozen=True)
class IngestOptions:
    """The deployment's ingest settings (``Settings.ingest_*``)."""

    max_attempts: int = 3  # tries of a file that crashes or exhausts the imaging process
    settle_seconds: float = 2.0  # a file's mtime must be this old, and unchanged, to import


@dataclass(frozen=True)
class _Deferred:
    """A file not settled yet: it goes to a later batch with what it is now."""

    file: IngestFile
    size: int
    mtime_ns: int


@dataclass
class _Done:
    """One file of a batch, imported: its media row and where its old original was."""

    file: IngestFile
    media: IngestedMedia


class IngestHandlers:
    """``ingest.scan`` and ``ingest.batch``, wired to the worker's resources."""

    def __init__(
        self,
        *,
        ingest: IngestRepository,
        media: MediaRepository,
        policies: SitePolicies,
        stores: StoreRegistry,
        imaging: ImagingPool,
        events: EventRecorder,
        options: IngestOptions | None = None,
    ) -> None:
        self.ingest = ingest
        self.media = media
        self.policies = policies
        self.stores = stores
        self.imaging = imaging
        self.events = events
        self.options = options or IngestOptions()
        self._logos: dict[str, bytes] = {}  # watermark logos by locator, read once

    def register(self, registry: HandlerRegistry) -> None:
        registry.register(kinds.INGEST_SCAN, self.scan)
        registry.register(kinds.INGEST_BATCH, self.batch)

    # -- the scan ------------------------------------------------------------------------

    async def scan(self, ctx: JobContext, job: Job) -> JSON:
        """Walk the run's source into the checkpoint; queue a batch job per ``batch_size``
        new or changed files. Result ``{runId, scanned, skipped, errors, queued}``."""
        run = await self._run_of(job)
        try:
            source = parse_source(run.source_uri, self.stores)
        except SourceInvalid as exc:
            await self.ingest.finish_scan(run.id, error={"code": exc.code, "message": str(exc)})
            raise JobFailed(str(exc), code=exc.code) from None
        await self.ingest.restart_scan(run.id)
        totals = ScanCounts()
        queued = 0
        try:
            async for batch in scan_source(source):
                queued += await self._record_scan_batch(ctx, run, batch)
                totals.files += batch.counts.files
                totals.skipped += batch.counts.skipped
                totals.errors += batch.counts.errors
                ctx.raise_if_cancelled()
        except (LeaseLost, asyncio.CancelledError):
            raise
        except Exception as exc:
            if job.attempt >= job.max_attempts:
                code = getattr(exc, "code", "scan_failed")
                await self.ingest.finish_scan(run.id, error={"code": code, "message": str(exc)})
            raise
        await self.ingest.finish_scan(run.id)
        log.info(
            "ingest run %s scanned %s: %d files, %d skipped, %d errors, %d queued",
            run.id,
            run.source_uri,
            totals.files,
            totals.skipped,
            totals.errors,
            queued,
        )
        return {
            "runId": str(run.id),
            "scanned": totals.files,
            "skipped": totals.skipped,
            "errors": totals.errors,
            "queued": queued,
        }

    async def _record_scan_batch(self, ctx: JobContext, run: IngestRun, batch: ScanBatch) -> int:
        """One transaction: the batch's files, their batch jobs and the run's counters;
        then an ``ingest_progress`` event. Returns the files queued."""
        async with self.ingest.transaction() as conn:
            paths = await self.ingest.record_scanned(conn, run, batch.files)
            batches = await queue_batches(ctx.queue, conn, run, paths)
            await self.ingest.assign_batches(conn, run.source_id, batches)
            await self.ingest.add_scan_counts(
                conn,
                run.id,
                scanned=batch.counts.files,
                skipped=batch.counts.skipped,
                errors=batch.counts.errors,
                queued=len(paths),
            )
        if paths:
            await self._publish_progress(run, job_id=ctx.job.id)
        return len(paths)

    # -- one batch ------------------------------------------------------------------------

    async def batch(self, ctx: JobContext, job: Job) -> JSON:
        """Import the files of this batch. Result ``{runId, files, indexed, failed,
        deferred}``; a file's own failure is recorded on the file, never fails the job."""
        started = await self.ingest.start_batch(job.id)
        if started is None:
            return {"runId": job.payload.get("runId"), "files": 0}
        run, files = started
        try:
            return await self._import(ctx, job, run, files)
        except (LeaseLost, asyncio.CancelledError):
            raise
        except Exception as exc:
            if job.attempt >= job.max_attempts:  # out of retries: its files fail, named
                code = getattr(exc, "code", "internal_error")
                async with self.ingest.transaction() as conn:
                    await self.ingest.fail_batch(conn, job.id, str(code), str(exc))
                await self._publish_progress(run, job_id=job.id)
            raise

    async def _import(
        self, ctx: JobContext, job: Job, run: IngestRun, files: list[IngestFile]
    ) -> JSON:
        source = parse_source(run.source_uri, self.stores)
        policy = await self.policies.load()
        profile = policy.ingest_profile(run.profile)
        logo = await self._logo(profile)
        outcomes: dict[str, FileOutcome] = {}
        done: list[_Done] = []
        deferred: list[_Deferred] = []
        # One file per imaging process at once: enough to keep every process busy, few
        # enough that the source bytes held in memory stay bounded.
        gate = asyncio.Semaphore(max(1, self.imaging.options.processes))

        async def one(file: IngestFile) -> None:
            async with gate:
                ctx.raise_if_cancelled()
                outcome = await self._one(source, run, file, profile, logo)
            if isinstance(outcome, _Done):
                done.append(outcome)
            elif isinstance(outcome, _Deferred):
                deferred.append(outcome)
            else:
                outcomes[file.path] = outcome

        await asyncio.gather(*(one(file) for file in files))
        refused = await self._commit(ctx, job, run, done, deferred, outcomes)
        await self._publish_progress(run, job_id=job.id)
        indexed = len(done) - len(refused)
        return {
            "runId": str(run.id),
            "worker": ctx.worker_name,
            "files": len(files),
            "indexed": indexed,
            "failed": len(files) - indexed - len(deferred),
            "deferred": len(deferred),
        }

    async def _one(
        self,
        source: Source,
        run: IngestRun,
        file: IngestFile,
        profile: CatalogProfile,
        logo: bytes | None,
    ) -> _Done | _Deferred | FileOutcome:
        """One file: settled, read, imaged, uploaded; deferred; or the outcome that says
        why not."""
        options = self.options
        if file.attempts > options.max_attempts:
            # Recorded attempts ran out without an outcome: each ended with its worker gone
            # (a decoder that takes the whole process down, the OOM killer).
            log.error(
                "ingest %s: %s crashed the importer %d times; failed as decoder_crashed",
                run.id,
                file.path,
                file.attempts - 1,
            )
            return _failed(file, "decoder_crashed", "the importer died on this file every try")
        check = await check_file(source, file, settle_seconds=options.settle_seconds)
        if check.state is FileState.VANISHED:
            return _failed(file, "source_missing", "the file is gone from the source")
        if check.state is FileState.CHANGED:
            assert check.current is not None
            return _deferred(file, check.current.size, check.current.mtime_ns)
        if file.size == 0:  # settled and empty: nothing to read or decode
            return _failed(file, "empty_file", "the file is empty")
        try:
            data = await read_file(source, file, max_bytes=profile.max_bytes)
        except FileChanged as exc:
            return _deferred(file, exc.size, exc.mtime_ns)
        except FileVanished:
            return _failed(file, "source_missing", "the file is gone from the source")
        except FileTooLarge as exc:
            return _failed(file, "file_too_large", str(exc))
        except FileUnreadable as exc:
            return _failed(file, "source_unreadable", str(exc))
        name = file.path.rsplit("/", 1)[-1]
        image: CatalogImage | None = None
        tries = file.attempts
        while image is None:
            try:
                image = await self.imaging.catalog(
                    data,
                    profile,
                    filename=name,
                    logo=logo,
                    priority=kinds.INGEST_BATCH_PRIORITY,
                )
            except ImageRejected as exc:
                log.warning(
                    "ingest %s: %s refused: %s (%s)", run.id, file.path, exc.message, exc.code
                )
                return _failed(file, exc.code, exc.message)
            except _CRASHES as exc:
                log.warning(
                    "ingest %s: %s: %s (try %d of %d)",
                    run.id,
                    file.path,
                    exc,
                    tries,
                    options.max_attempts,
                )
                if tries >= options.max_attempts:
                    log.error("ingest %s: %s failed as decoder_crashed", run.id, file.path)
                    return _failed(file, "decoder_crashed", f"{exc} ({tries} tries)")
                tries += 1
            except (ImagingFailed, WatermarkLogoInvalid) as exc:
                # WatermarkLogoInvalid: the profile's logo, not this file; `ingest retry
                # --code watermark_logo_invalid` once the policy names a good one.
                return _failed(file, exc.code, str(exc))
        media = await self._upload(run, file, data, image, profile)
        return _Done(file, media)

    async def _upload(
        self,
        run: IngestRun,
        file: IngestFile,
        data: bytes,
        image: CatalogImage,
        profile: CatalogProfile,
    ) -> IngestedMedia:
        """The original (byte for byte), the thumbnail and the preview, at once."""
        taken = image.taken_at or datetime.fromtimestamp(file.mtime_ns / 1e9, UTC)
        extension = os.path.splitext(file.path)[1]
        keys = catalog_keys(profile.prefix, file.media_id, extension, taken)
        store = self.stores.active
        original, thumbnail, preview = await asyncio.gather(
            store.upload(keys.original, data, image.detected_type),
            store.upload(
                keys.thumbnail,
                image.thumbnail.data,
                image.thumbnail.content_type,
                cache_control=CATALOG_CACHE_CONTROL,
            ),
            store.upload(
                keys.watermarked,
                image.preview.data,
                image.preview.content_type,
                cache_control=CATALOG_CACHE_CONTROL,
            ),
        )
        variants: dict[str, JSON] = {
            "thumbnail": {
                "locator": str(thumbnail.locator),
                "width": image.thumbnail.width,
                "height": image.thumbnail.height,
                "bytes": len(image.thumbnail.data),
                "contentType": image.thumbnail.content_type,
            },
            "watermarked": {
                "locator": str(preview.locator),
                "width": image.preview.width,
                "height": image.preview.height,
                "bytes": len(image.preview.data),
                "contentType": image.preview.content_type,
            },
        }
        return IngestedMedia(
            id=file.media_id,
            owner_id=run.owner_id,
            purpose=CATALOG_PURPOSE,
            source_locator=str(original.locator),
            original_filename=file.path.rsplit("/", 1)[-1],
            detected_type=image.detected_type,
            bytes=image.source_bytes,
            width=image.width,
            height=image.height,
            variants=variants,
            blur_data_url=image.blur_data_url,
            exif=image.exif,
            gps=image.gps,
            sha256=image.sha256,
        )

    async def _commit(
        self,
        ctx: JobContext,
        job: Job,
        run: IngestRun,
        done: list[_Done],
        deferred: list[_Deferred],
        outcomes: dict[str, FileOutcome],
    ) -> set[uuid.UUID]:
        """ONE transaction: the media rows, every file's status, and a delayed batch for
        the deferred files. Returns the media ids refused (deleted meanwhile)."""
        refused: set[uuid.UUID] = set()
        replaced: list[str] = []
        async with self.ingest.transaction() as conn:
            written = await self.media.upsert_ingested(conn, [d.media for d in done])
            for item in done:
                file, media = item.file, item.media
                if media.id not in written:
                    refused.add(media.id)
                    outcomes[file.path] = _failed(
                        file, "media_deleted", "the item was deleted; a rescan will not revive it"
                    )
                    continue
                previous = written[media.id]
                if previous is not None:
                    replaced.append(previous)
                outcomes[file.path] = FileOutcome(
                    path=file.path, status=IngestStatus.INDEXED, sha256=media.sha256
                )
            # Deferred files go to a new batch that runs once they may have settled; the
            # outcome moves them there (fenced by this batch's id, like every outcome).
            later = await queue_batches(
                ctx.queue,
                conn,
                run,
                [item.file.path for item in deferred],
                delay=max(self.options.settle_seconds, 1.0),
            )
            waiting = {item.file.path: item for item in deferred}
            for batch_id, paths in later:
                for path in paths:
                    outcomes[path] = FileOutcome(
                        path=path,
                        status=IngestStatus.PENDING,
                        size=waiting[path].size,
                        mtime_ns=waiting[path].mtime_ns,
                        batch_id=batch_id,
                    )
            await self.ingest.finish_batch(conn, job.id, list(outcomes.values()))
        # After the commit: objects no row names any more (a new version's original under a
        # new yyyy/mm, or every object of an item deleted meanwhile).
        stale = [Locator.parse(locator) for locator in replaced]
        for item in done:
            if item.media.id in refused:
                stale.append(Locator.parse(item.media.source_locator))
                stale.extend(Locator.parse(str(v["locator"])) for v in item.media.variants.values())
        for locator in stale:
            try:
                await self.stores.delete(locator)
            except Exception:
                log.warning("ingest %s: could not delete %s", run.id, locator, exc_info=True)
        return refused

    # -- shared ---------------------------------------------------------------------------

    async def _run_of(self, job: Job) -> IngestRun:
        try:
            run_id = uuid.UUID(str(job.payload.get("runId")))
        except ValueError:
            raise JobFailed("the job names no ingest run", code="invalid_payload") from None
        run = await self.ingest.get_run(run_id)
        if run is None:
            raise JobFailed(f"ingest run {run_id} not found", code="run_not_found")
        return run

    async def _logo(self, profile: CatalogProfile) -> bytes | None:
        locator = profile.watermark.logo
        if locator is None:
            return None
        if locator not in self._logos:
            try:
                self._logos[locator] = await self.stores.download(Locator.parse(locator))
            except MediaJobsError as exc:
                raise JobFailed(
                    f"the watermark logo {locator} cannot be read: {exc}", code="logo_missing"
                ) from None
        return self._logos[locator]

    async def _publish_progress(self, run: IngestRun, *, job_id: uuid.UUID) -> None:
        """One ``ingest_progress`` event with the run's counts (from the counters)."""
        status = await self.ingest.status(run.id)
        if status is None:
            return
        event = ingest_progress_event(
            run.owner_id,
            run.id,
            status.counts,
            total=status.total,
            failed_by_code=status.failed_by_code,
            job_id=job_id,
        )
        async with self.ingest.transaction() as conn:
            recorded = await self.events.record_events(conn, [event])
        await self.events.committed(recorded)


def _failed(file: IngestFile, code: str, message: str) -> FileOutcome:
    return FileOutcome(
        path=file.path, status=IngestStatus.FAILED, error_code=code, error_message=message
    )


def _deferred(file: IngestFile, size: int, mtime_ns: int) -> _Deferred:
    return _Deferred(file, size, mtime_ns)
