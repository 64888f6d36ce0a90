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
on one file more at once than the imaging pool takes (two per process: the one it runs and the
next, already sent): check the file is settled, read
it, make the derivatives in the crash-isolated imaging pool (at ingest priority: an upload
waiting for a process goes first), and upload the original, the thumbnail and the
watermarked preview under keys derived from the file's media id (a rerun overwrites the
same keys). Then ONE transaction writes the batch's media rows and file statuses, and one
``ingest_progress`` event goes to the owner's stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
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
    batches_needed,
)
from mediajobs.db.media import IngestedMedia, MediaRepository
from mediajobs.db.policies import SitePolicies, UnknownProfile
from mediajobs.errors import (
    ImageRejected,
    JobCancelled,
    JobError,
    JobFailed,
    LeaseLost,
    MediaJobsError,
    Retry,
    StorageError,
    StorageUnavailable,
)
from mediajobs.handlers.imaging_pool import (
    ImagingCrashed,
    ImagingFailed,
    ImagingOutOfMemory,
    ImagingPool,
    ImagingTimeout,
)
from mediajobs.handlers.understand import enqueue_understanding
from mediajobs.imaging.catalog import CatalogImage, CatalogProfile
from mediajobs.imaging.watermark import WatermarkLogoInvalid
from mediajobs.ingest.runs import enqueue_batches, queue_batches
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
    source_reachable,
)
from mediajobs.logs import quoted
from mediajobs.queue import kinds
from mediajobs.queue.models import Job, new_job_id
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
# the same keys: caches keep a derivative but revalidate it (ETag) before each use.
CATALOG_CACHE_CONTROL = "public, no-cache"
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
        """Add ``ingest.scan`` and ``ingest.batch`` to ``registry``."""
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
        await self.ingest.restart_scan(run.id, job.id)
        totals = ScanCounts()
        queued = 0
        try:
            async with contextlib.aclosing(scan_source(source)) as batches:
                async for batch in batches:
                    queued += await self._record_scan_batch(ctx, run, batch)
                    totals.files += batch.counts.files
                    totals.skipped += batch.counts.skipped
                    totals.errors += batch.counts.errors
                    ctx.raise_if_cancelled()
        except (LeaseLost, asyncio.CancelledError):
            raise
        except Exception as exc:
            # The job's last attempt, or an end no retry follows (cancelled, failed for
            # good): the run's scan is over, and says why.
            if job.attempt >= job.max_attempts or (isinstance(exc, JobError) and not exc.retryable):
                code = getattr(exc, "code", "scan_failed")
                await self.ingest.finish_scan(run.id, error={"code": code, "message": str(exc)})
            raise
        await self.ingest.finish_scan(run.id)
        log.info(
            "ingest run %s scanned %s: %d files, %d skipped, %d errors, %d queued",
            run.id,
            quoted(run.source_uri),
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
            ids = [new_job_id() for _ in range(batches_needed(len(batch.files), run.batch_size))]
            used = await self.ingest.record_scanned(conn, run, batch.files, ids)
            batches = [(job_id, files) for job_id, files in used if job_id is not None]
            await enqueue_batches(ctx.queue, conn, run, batches)
            queued = sum(files for _, files in batches)
            await self.ingest.add_scan_counts(
                conn,
                run.id,
                scanned=batch.counts.files,
                skipped=batch.counts.skipped,
                errors=batch.counts.errors,
                queued=queued,
            )
        if queued:
            await self._publish_progress(run, job_id=ctx.job.id)
        return queued

    # -- one batch ------------------------------------------------------------------------

    async def batch(self, ctx: JobContext, job: Job) -> JSON:
        """Import the files of this batch. Result ``{runId, worker, files, indexed, failed,
        deferred}``; a file's own failure is recorded on the file, never fails the job.

        The first attempt counts an attempt on every file at once and writes their outcomes
        in one transaction. An attempt that ends with its worker alive (an error, a
        shutdown) gives those attempts back. An attempt that follows one whose worker died
        (its lease expired) may hold the file that killed it: it goes one file at a time, counting
        each file's attempt right before its decode and writing its outcome right after,
        so only the file that kills the worker gathers attempts (``decoder_crashed`` at
        ``max_attempts``)."""
        # The attempt before ended with its worker gone (its lease expired): one of the
        # files may have killed it. Any other ending gave its attempts back.
        careful = job.attempt > 1 and (job.error or {}).get("code") == "lease_expired"
        started = await self.ingest.start_batch(job.id, count_attempts=not careful)
        if started is None:
            return {"runId": job.payload.get("runId"), "worker": ctx.worker_name, "files": 0}
        run, files = started
        tally = _Tally(counted=set() if careful else {file.path for file in files})
        try:
            setup = await self._prepare(run)
            if careful:
                for file in files:
                    await self._import(ctx, job, run, [file], tally, setup, careful=True)
            else:
                await self._import(ctx, job, run, files, tally, setup, careful=False)
        except LeaseLost:
            raise
        except BaseException as exc:
            # This worker lives on: no file of the attempt crashed it.
            with contextlib.suppress(Exception):
                await asyncio.shield(self.ingest.give_back_attempts(job.id, sorted(tally.counted)))
            if isinstance(exc, Exception):
                final = job.attempt >= job.max_attempts or isinstance(
                    exc, (JobFailed, JobCancelled)
                )
                if final:  # the job ends: its open files fail, named, for `ingest retry`
                    code = str(getattr(exc, "code", "internal_error"))
                    if isinstance(exc, Retry):  # the source stayed out of reach throughout
                        code = "source_unavailable"
                    async with self.ingest.transaction() as conn:
                        await self.ingest.fail_batch(conn, job.id, code, str(exc))
                    await self._publish_progress(run, job_id=job.id)
            raise
        await self._publish_progress(run, job_id=job.id)
        return {
            "runId": str(run.id),
            "worker": ctx.worker_name,
            "files": len(files),
            "indexed": tally.indexed,
            "failed": tally.failed,
            "deferred": tally.deferred,
        }

    async def _prepare(self, run: IngestRun) -> _Setup:
        """What every file of a batch attempt needs: the source, the profile, its logo."""
        try:
            source = parse_source(run.source_uri, self.stores)
            profile = (await self.policies.load()).ingest_profile(run.profile)
        except SourceInvalid as exc:
            if run.source_uri.startswith("file:"):  # not mounted here (yet): wait for it
                raise Retry(f"{exc}; waiting for the source") from None
            raise JobFailed(str(exc), code=exc.code) from None  # no such store configured
        except UnknownProfile as exc:  # the policy lost the run's profile
            raise JobFailed(str(exc), code=exc.code) from None
        return _Setup(source, profile, await self._logo(profile))

    async def _import(
        self,
        ctx: JobContext,
        job: Job,
        run: IngestRun,
        files: list[IngestFile],
        tally: _Tally,
        setup: _Setup,
        *,
        careful: bool,
    ) -> None:
        """Work on ``files`` (one more at once than the imaging pool takes, ``processes x
        depth``: while a process decodes, its next file waits at its door and another is
        read or the last one's objects are uploaded, so no process waits on I/O or on a
        hand-off; the source bytes held stay bounded by that count), then write their
        outcomes in one transaction."""
        results: dict[str, _Done | _Deferred | FileOutcome] = {}
        options = self.imaging.options
        gate = asyncio.Semaphore(max(1, options.processes) * max(1, options.depth) + 1)

        async def one(file: IngestFile) -> None:
            async with gate:
                ctx.raise_if_cancelled()
                if careful:
                    attempts = await self.ingest.record_attempt(job.id, file.path)
                    if attempts is None:
                        return  # a rescan moved it elsewhere
                    tally.counted.add(file.path)
                    if attempts > self.options.max_attempts:
                        results[file.path] = _crashed_too_often(run, file, attempts - 1)
                        return
                    file = dataclasses.replace(file, attempts=attempts)
                results[file.path] = await self._one(run, file, setup)

        try:
            async with asyncio.TaskGroup() as group:
                for file in files:
                    group.create_task(one(file))
        except BaseExceptionGroup as failed:
            # What stopped the batch (LeaseLost first, then Retry, JobCancelled, a database
            # error), as itself: the worker and the handler's own except clauses read it.
            first = next(
                (e for e in failed.exceptions if isinstance(e, LeaseLost)), failed.exceptions[0]
            )
            raise first from None
        await self._commit(ctx, job, run, results, tally)

    async def _one(
        self, run: IngestRun, file: IngestFile, setup: _Setup
    ) -> _Done | _Deferred | FileOutcome:
        """One file: settled, read, imaged, uploaded; deferred; or the outcome that says
        why not. Only a source that is gone as a whole (its folder vanished: an unmounted
        disk) or a store that cannot be reached escapes, as ``Retry`` for the batch."""
        try:
            return await self._settle_read_and_make(run, file, setup)
        except Retry:
            raise
        except StorageUnavailable as exc:  # the store, not the file: the batch waits
            raise Retry(f"storage: {exc}") from None
        except StorageError as exc:  # refused for good (denied, a key it cannot hold)
            log.warning("ingest %s: %s: storage refused: %s", run.id, quoted(file.path), exc)
            return _failed(file, exc.code, str(exc))
        except Exception as exc:
            log.exception("ingest %s: %s failed: %s", run.id, quoted(file.path), exc)
            return _failed(file, "internal_error", f"{type(exc).__name__}: {exc}")

    async def _settle_read_and_make(
        self, run: IngestRun, file: IngestFile, setup: _Setup
    ) -> _Done | _Deferred | FileOutcome:
        options, source, profile = self.options, setup.source, setup.profile
        try:
            check = await check_file(source, file, settle_seconds=options.settle_seconds)
        except FileUnreadable as exc:
            return _failed(file, "source_unreadable", str(exc))
        if check.state is FileState.VANISHED:
            return await self._vanished(source, run, file)
        if check.state is FileState.CHANGED:
            assert check.current is not None
            return _Deferred(file, check.current.size, check.current.mtime_ns)
        if file.size == 0:  # settled and empty: nothing to read or decode
            return _failed(file, "empty_file", "the file is empty")
        try:
            data = await read_file(source, file, max_bytes=profile.max_bytes)
        except FileChanged as exc:
            return _Deferred(file, exc.size, exc.mtime_ns)
        except FileVanished:
            return await self._vanished(source, run, file)
        except FileTooLarge as exc:
            return _failed(file, "file_too_large", str(exc))
        except FileUnreadable as exc:
            return _failed(file, "source_unreadable", str(exc))
        name = file.path.rsplit("/", 1)[-1]
        image: CatalogImage | None = None
        tries = max(1, file.attempts)
        while image is None:
            try:
                image = await self.imaging.catalog(
                    data,
                    profile,
                    filename=name,
                    logo=setup.logo,
                    priority=kinds.INGEST_BATCH_PRIORITY,
                )
            except ImageRejected as exc:
                log.warning(
                    "ingest %s: %s refused: %s (%s)",
                    run.id,
                    quoted(file.path),
                    exc.message,
                    exc.code,
                )
                return _failed(file, exc.code, exc.message)
            except _CRASHES as exc:
                log.warning(
                    "ingest %s: %s: %s (try %d of %d)",
                    run.id,
                    quoted(file.path),
                    exc,
                    tries,
                    options.max_attempts,
                )
                if tries >= options.max_attempts:
                    log.error("ingest %s: %s failed as decoder_crashed", run.id, quoted(file.path))
                    return _failed(file, "decoder_crashed", f"{exc} ({tries} tries)")
                tries += 1
            except (ImagingFailed, WatermarkLogoInvalid) as exc:
                # WatermarkLogoInvalid: the profile's logo, not this file; `ingest retry
                # --code watermark_logo_invalid` once the policy names a good one.
                return _failed(file, exc.code, str(exc))
        # The library may have changed while the file was decoded: ask again right before
        # its objects are written over.
        refused = _refusal(
            file, run, (await self.media.existing([file.media_id])).get(file.media_id)
        )
        if refused is not None:
            return refused
        media = await self._upload(run, file, data, image, profile)
        return _Done(file, media)

    async def _vanished(self, source: Source, run: IngestRun, file: IngestFile) -> FileOutcome:
        """A file that is gone: ``source_missing``, unless the source itself is out of reach
        (its root missing, or empty: an unmounted disk looks like that): then the whole
        batch waits (``Retry``)."""
        if not await source_reachable(source):
            raise Retry(f"{source.directory} is empty or gone; is it mounted?")
        return _failed(file, "source_missing", "the file is gone from the source")

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
        results: dict[str, _Done | _Deferred | FileOutcome],
        tally: _Tally,
    ) -> None:
        """ONE transaction: hold the job (this attempt must still own it) and the files
        still in this batch, then write their media rows, their statuses, and a delayed
        batch for the deferred ones. Files a rescan moved elsewhere are left to their new
        batch; nothing is written at all when the attempt lost its lease."""
        replaced: list[str] = []
        async with self.ingest.transaction() as conn:
            held = await self.ingest.hold_batch(conn, job.id, job.attempt, sorted(results))
            if held is None:  # another attempt owns the batch now: write nothing
                raise LeaseLost(f"batch {job.id} attempt {job.attempt} lost its lease")
            mine = {path: result for path, result in results.items() if path in held}
            done = [r for r in mine.values() if isinstance(r, _Done)]
            deferred = [r for r in mine.values() if isinstance(r, _Deferred)]
            outcomes = {p: r for p, r in mine.items() if isinstance(r, FileOutcome)}
            written = await self.media.upsert_ingested(conn, [d.media for d in done])
            for item in done:
                file, media = item.file, item.media
                if media.id not in written:  # deleted (or rejected) since the batch began
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
            await enqueue_understanding(
                ctx.queue, conn, run.owner_id, [d.media.id for d in done if d.media.id in written]
            )
        tally.counted.difference_update(results)
        tally.deferred += len(deferred)
        tally.indexed += sum(1 for o in outcomes.values() if o.status is IngestStatus.INDEXED)
        tally.failed += sum(1 for o in outcomes.values() if o.status is IngestStatus.FAILED)
        # After the commit: an earlier version's original that no row names any more (a new
        # yyyy/mm). An item's own keys are never deleted here: they are the row's.
        for locator in replaced:
            try:
                await self.stores.delete(Locator.parse(locator))
            except Exception:
                log.warning("ingest %s: could not delete %s", run.id, locator, exc_info=True)

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
            except StorageUnavailable as exc:
                raise Retry(f"the watermark logo {locator}: {exc}") from None
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


@dataclass(frozen=True)
class _Setup:
    """A batch attempt's source, profile and watermark logo (``_prepare``)."""

    source: Source
    profile: CatalogProfile
    logo: bytes | None


@dataclass
class _Tally:
    """A batch attempt's bookkeeping: the files whose attempt it counted and has not yet
    settled (given back if it ends with its worker alive), and its outcomes so far."""

    counted: set[str]
    indexed: int = 0
    failed: int = 0
    deferred: int = 0


def _refusal(
    file: IngestFile, run: IngestRun, target: tuple[str, str] | None
) -> FileOutcome | None:
    """Why the item of ``file`` must not be written (checked before any of its objects
    are): another owner's, or deleted, rejected or purged in the library."""
    if target is None:
        return None
    owner, status = target
    if owner != run.owner_id or status in ("deleted", "purged"):
        return _failed(file, "media_deleted", "the item was deleted; a rescan will not revive it")
    if status == "rejected":
        return _failed(file, "media_rejected", "the review gate rejected the item")
    return None


def _crashed_too_often(run: IngestRun, file: IngestFile, died: int) -> FileOutcome:
    log.error(
        "ingest %s: %s was being imported each time the worker died (%d attempts); "
        "failed as decoder_crashed",
        run.id,
        quoted(file.path),
        died,
    )
    return _failed(file, "decoder_crashed", f"the worker died during each of {died} attempts")


def _failed(file: IngestFile, code: str, message: str) -> FileOutcome:
    return FileOutcome(
        path=file.path, status=IngestStatus.FAILED, error_code=code, error_message=message
    )
