"""Runs: starting one (its scan job), queueing batches, and reading a run's progress (rate
and ETA) for ``mediajobs ingest``."""

from __future__ import annotations

import shlex
import uuid
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from mediajobs.db.ingest import (
    OPEN_STATUSES,
    RETRY_PAGE_SIZE,
    IngestRepository,
    IngestRun,
    RunStatus,
)
from mediajobs.db.media import Conn
from mediajobs.errors import MediaJobsError
from mediajobs.ingest.source import Source
from mediajobs.queue import kinds
from mediajobs.queue.models import JobSpec, new_job_id
from mediajobs.queue.queue import JobQueue
from mediajobs.storage.base import Store
from mediajobs.types import JSON

# Attempts of an ingest.batch job. A batch's later attempts go one file at a time, so a file
# that kills its worker fails alone after MEDIAJOBS_INGEST_MAX_ATTEMPTS of them; the rest
# leave room for several such files in one batch, and for outages.
BATCH_MAX_ATTEMPTS = 20


class SourceReowned(MediaJobsError):
    """A retry through a run of an owner whose source another owner has claimed since (it
    was left free: its run found no file). The source's failed files are that owner's
    items: they are retried through that owner's runs, never given to this run's owner."""

    code = "source_reowned"

    def __init__(self, run: IngestRun) -> None:
        super().__init__(
            f"run {run.id} was {run.owner_id}'s, but its source {run.source_uri} is "
            f"{run.source_owner_id}'s now: retry through that owner's run of it (mediajobs "
            f"ingest runs --owner {shlex.quote(run.source_owner_id)})"
        )
        self.run_id = run.id


def overlaps_own_keys(source: Source, active: Store, prefixes: Iterable[str]) -> str | None:
    """Why ``source`` may not be ingested, or None: a prefix of the active store that holds,
    or lies inside, the platform's own objects (``media/``: uploads and variants; each
    ingest profile's ``prefixes``: earlier ingests), so an ingest would import its own
    output again at every run."""
    if source.store is None or (source.store.provider, source.store.bucket) != (
        active.provider,
        active.bucket,
    ):
        return None
    for own in ("media/", *(f"{prefix}/" for prefix in prefixes)):
        if source.prefix.startswith(own) or own.startswith(source.prefix):
            return (
                f"{source.uri} holds or lies inside {own}, where this platform keeps its own "
                "objects; ingest from another prefix or bucket"
            )
    return None


async def start_run(
    ingest: IngestRepository,
    queue: JobQueue,
    *,
    uri: str,
    owner_id: str,
    profile: str,
    batch_size: int,
) -> IngestRun:
    """A new run of the source ``uri`` and its ``ingest.scan`` job, in one transaction.
    Raises ``SourceOwnedElsewhere`` when another owner ingests that source,
    ``SourceOverlaps`` when it holds or lies inside another source."""
    async with ingest.transaction() as conn:
        run = await ingest.open_run(uri, owner_id, profile, batch_size, conn=conn)
        job = await queue.enqueue(
            JobSpec(
                kinds.INGEST_SCAN,
                owner_id,
                {"runId": str(run.id)},
                priority=kinds.INGEST_SCAN_PRIORITY,
            ),
            conn=conn,
        )
        await ingest.set_scan_job(conn, run.id, job.id)
    return run


async def queue_batches(
    queue: JobQueue,
    conn: Conn,
    run: IngestRun,
    paths: Sequence[str],
    *,
    delay: float = 0.0,
) -> list[tuple[uuid.UUID, list[str]]]:
    """Split ``paths`` into ``ingest.batch`` jobs of the run's batch size, enqueued inside
    ``conn``'s transaction (see ``enqueue_batches``). Returns each job's id with its
    paths: the caller writes them into the files in the same transaction."""
    size = run.batch_size
    groups = [list(paths[i : i + size]) for i in range(0, len(paths), size)]
    planned = [(new_job_id(), group) for group in groups]
    await enqueue_batches(queue, conn, run, [(i, len(g)) for i, g in planned], delay=delay)
    return planned


async def enqueue_batches(
    queue: JobQueue,
    conn: Conn,
    run: IngestRun,
    batches: Sequence[tuple[uuid.UUID, int]],
    *,
    delay: float = 0.0,
) -> None:
    """Enqueue one ``ingest.batch`` job per ``(job id, files)`` of ``batches`` (ids made by
    ``new_job_id``; priority ``INGEST_BATCH_PRIORITY``, ``BATCH_MAX_ATTEMPTS`` attempts,
    runnable after ``delay`` seconds) inside ``conn``'s transaction through ``queue``."""
    if not batches:
        return
    specs = [
        JobSpec(
            kinds.INGEST_BATCH,
            run.owner_id,
            {"runId": str(run.id), "files": files},
            priority=kinds.INGEST_BATCH_PRIORITY,
            delay=delay,
            max_attempts=BATCH_MAX_ATTEMPTS,
        )
        for _, files in batches
    ]
    await queue.enqueue_many(specs, conn=conn, ids=[job_id for job_id, _ in batches])


async def retry_failed(
    ingest: IngestRepository,
    queue: JobQueue,
    run: IngestRun,
    *,
    code: str | None = None,
    stranded_only: bool = False,
) -> int:
    """Put the failed files of the run's source (whichever of its runs failed them; only
    those failed with ``code``, when given) and, without a code, its stranded ones (open,
    but their batch job ended; with ``stranded_only``, those alone) back in the queue, in
    new batches of ``run``: a page of ``RETRY_PAGE_SIZE`` files per transaction, each
    page's files and their batch jobs together. Returns the files re-queued. Raises
    ValueError for a code with ``stranded_only``, ``SourceReowned`` when the source is
    another owner's now."""
    if run.owner_id != run.source_owner_id:
        raise SourceReowned(run)
    total = 0
    while True:
        async with ingest.transaction() as conn:
            paths = await ingest.retry_failed(conn, run, code=code, stranded_only=stranded_only)
            batches = await queue_batches(queue, conn, run, paths)
            await ingest.assign_batches(conn, run.source_id, batches)
        total += len(paths)
        if len(paths) < RETRY_PAGE_SIZE:
            return total


def is_finished(status: RunStatus) -> bool:
    """The scan has ended and no file of the run is still on its way."""
    return status.run.state != "scanning" and not any(
        status.counts.get(name, 0) for name in OPEN_STATUSES
    )


@dataclass
class RateMeter:
    """Files per second over the last ``window`` seconds of samples, and the ETA of the
    rest at that rate (None until two samples apart in time have been seen)."""

    window: float = 30.0

    def __post_init__(self) -> None:
        self._samples: deque[tuple[float, int]] = deque()

    def add(self, now: float, done: int) -> None:
        """A look at the run: ``done`` files at ``now`` (monotonic seconds)."""
        self._samples.append((now, done))
        while len(self._samples) > 2 and now - self._samples[0][0] > self.window:
            self._samples.popleft()

    @property
    def rate(self) -> float | None:
        """Files per second over the window; None before two samples apart in time."""
        if len(self._samples) < 2:
            return None
        (t0, d0), (t1, d1) = self._samples[0], self._samples[-1]
        return (d1 - d0) / (t1 - t0) if t1 > t0 else None

    def eta(self, remaining: int) -> float | None:
        """Seconds until ``remaining`` more files are done at ``rate``; None without one."""
        return eta(remaining, self.rate)


def eta(remaining: int, rate: float | None) -> float | None:
    """Seconds until ``remaining`` more files are done at ``rate`` files/s: 0 when none
    remain, None without a rate (or at a standstill)."""
    if remaining <= 0:
        return 0.0
    return remaining / rate if rate else None


def run_eta(status: RunStatus, rate: float | None) -> float | None:
    """Seconds until the run's open files are done at ``rate`` files/s (``eta``), or None
    while its scan goes on with nothing open yet: the scan may still find any number."""
    remaining = status.total - status.done
    if remaining <= 0 and status.run.state == "scanning":
        return None
    return eta(remaining, rate)


def run_state(run: IngestRun, total: int, done: int) -> str:
    """What ``run`` is doing, with ``total`` files of which ``done`` are indexed or failed,
    as ``ingest status`` and ``ingest runs`` show it: ``scanning``, ``scan_failed``,
    ``importing`` (scanned, files still open), ``no_images`` (scanned, no approved file
    found), or ``finished``."""
    if run.state in ("scanning", "scan_failed"):
        return run.state
    if done < total:
        return "importing"
    return "no_images" if run.scanned == 0 and total == 0 else "finished"


def overall_rate(status: RunStatus) -> float | None:
    """Files per second from the run's start to its latest file update (``ingest
    status``, which has one look)."""
    if status.last_update is None or status.done == 0:
        return None
    seconds = (status.last_update - status.run.created_at).total_seconds()
    return status.done / seconds if seconds > 0 else None


def status_json(status: RunStatus, rate: float | None, eta: float | None) -> dict[str, JSON]:
    """A run's progress as ``ingest status --json`` and ``ingest run --json`` print it."""
    run = status.run
    return {
        "runId": str(run.id),
        "source": run.source_uri,
        "ownerId": run.owner_id,
        "profile": run.profile,
        "state": run.state,
        "finished": is_finished(status),
        "scan": {
            "scanned": run.scanned,
            "skipped": run.skipped,
            "errors": run.scan_errors,
            "queued": run.queued,
            "error": run.error,
        },
        "total": status.total,
        "done": status.done,
        "counts": dict(status.counts),
        "failedByCode": dict(status.failed_by_code),
        "filesPerSecond": None if rate is None else round(rate, 2),
        "etaSeconds": None if eta is None else round(eta, 1),
        "createdAt": run.created_at.isoformat(),
    }
