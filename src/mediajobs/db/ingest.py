"""Bulk ingest in Postgres (migrations 0008 and 0009): sources, runs, and the checkpoint of
every source file (``ingest_files``, seed 003's ``processing_log``), with the per-status
counters the statement triggers keep in ``ingest_counts``.

A file is known by (source, path) whichever run found it. Its media id is assigned once
(v4, ``gen_random_uuid()``) and kept by every rerun, so object keys derived from it are
overwritten, never duplicated. Each scan batch, batch start and batch outcome is one
statement; the statements and their lock order live in ``db/ingest_sql.py``.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, fields
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar, Protocol

from psycopg.types.json import Jsonb

from mediajobs.db import ingest_sql as sql
from mediajobs.db.media import Conn
from mediajobs.db.pool import Pool
from mediajobs.errors import MediaJobsError
from mediajobs.types import JSON

# A profile name and a run's batch size, as migration 0008 checks them.
PROFILE_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,31}")
BATCH_SIZE_RANGE = range(1, 1001)


class IngestStatus(StrEnum):
    """A source file's place in the pipeline (the ``ingest_status`` type of 0008)."""

    PENDING = "pending"  # scanned; waiting for (or in) its batch, or deferred to a new one
    PROCESSED = "processed"  # derivatives made
    UPLOADED = "uploaded"  # objects stored
    INDEXED = "indexed"  # the media row is written: the item is in the library
    AI_DONE = "ai_done"  # indexed, and media.embed has hashed, tagged (and embedded) it
    FAILED = "failed"  # error_code and error_message say why


# Statuses of a file still on its way: its batch has not finished it yet (pending,
# processed, uploaded). The statements of db/ingest_sql.py use the same list.
OPEN_STATUSES: tuple[IngestStatus, ...] = tuple(IngestStatus(s) for s in sql.OPEN_STATUS_NAMES)
# Statuses of a file its batch has finished: in the library (and understood), or failed.
DONE_STATUSES = (IngestStatus.INDEXED, IngestStatus.AI_DONE, IngestStatus.FAILED)

# Files one ``retry_failed`` call re-queues at most (one transaction each).
RETRY_PAGE_SIZE = 10_000


def batches_needed(files: int, batch_size: int) -> int:
    """How many batches of ``batch_size`` hold ``files`` files (ceiling division)."""
    return -(-files // batch_size)


class ScannedLike(Protocol):
    """What the scan yields for one file (``mediajobs.ingest.scan.ScannedFile`` fits):
    ``path`` relative to the source, '/'-separated; ``size`` in bytes; ``mtime_ns`` in ns
    since the epoch; ``etag`` of a bucket object, or None."""

    @property
    def path(self) -> str: ...
    @property
    def size(self) -> int: ...
    @property
    def mtime_ns(self) -> int: ...
    @property
    def etag(self) -> str | None: ...


class SourceOwnedElsewhere(MediaJobsError):
    """A run names a source (its uri) that holds files another owner ingested, or that a
    run of another owner is scanning."""

    code = "source_owned_elsewhere"

    def __init__(self, uri: str, owner_id: str) -> None:
        super().__init__(
            f"the source {uri} belongs to another owner, {owner_id!r} (its files are, or its "
            "scan is making them, that owner's items)"
        )
        self.uri = uri
        self.owner_id = owner_id


class SourceOverlaps(MediaJobsError):
    """A run names a source that holds, or lies inside, a source ingested before (a folder
    and its parent, a prefix and a longer one): every file they share would become two
    items. ``other`` is that source's uri, ``inside`` whether ``uri`` lies inside it."""

    code = "source_overlaps"

    def __init__(self, uri: str, other: str, *, inside: bool, owned_elsewhere: bool) -> None:
        where = "lies inside" if inside else "holds"
        whose = "a source of another owner" if owned_elsewhere else "a source ingested before"
        if owned_elsewhere:
            advice = "ingest a folder or prefix outside it"
        elif inside:
            advice = f"ingest {other} again (a rerun imports its new and changed files)"
        else:
            advice = f"ingest {other} again, and the folders or prefixes outside it"
        super().__init__(
            f"{uri} {where} {other}, {whose}: every file they share would become two "
            f"items; {advice}"
        )
        self.uri = uri
        self.other = other
        self.inside = inside


# How a failed file without an error code is shown (one written by hand: the handlers
# always give one); `ingest retry --code unknown` picks those.
UNKNOWN_CODE = "unknown"

# pg_advisory_xact_lock key of the source claims: the bytes "mjsource" as a signed bigint.
SOURCES_LOCK_KEY = int.from_bytes(b"mjsource", "big") - (1 << 63)


def _from_row(cls: Any, row: Mapping[str, Any], **overrides: Any) -> Any:
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in row.items() if k in names}, **overrides)


@dataclass(frozen=True)
class ScanJob:
    """The state of a run's ``ingest.scan`` job: ``state`` (``queued``, ``running``,
    ``succeeded``, ``failed``, ``cancelled``), ``attempt`` of ``max_attempts`` (0 while
    no worker has taken it), ``error`` of its last failed attempt (``{code, message,
    retryable}``) or None."""

    state: str
    attempt: int
    max_attempts: int
    error: Mapping[str, JSON] | None

    @property
    def untaken(self) -> bool:
        """Queued and never taken: no worker has run it yet."""
        return self.state == "queued" and self.attempt == 0

    @property
    def retrying(self) -> bool:
        """Queued again after a failed attempt, to be retried."""
        return self.state == "queued" and self.attempt > 0

    @property
    def ended(self) -> bool:
        """Neither queued nor running: it will not run again."""
        return self.state not in ("queued", "running")


@dataclass(frozen=True)
class IngestRun:
    """One ``mediajobs ingest run``: its source, owner, profile and batch size (files per
    ``ingest.batch`` job), its scan's state (``scanning``, ``scanned``, ``scan_failed``
    with ``error`` = ``{code, message}``) and counters (files seen with an approved
    extension, other files, scan errors, files queued to batches). ``updated_at`` moves
    with every change of the run's counters and of its files' statuses.
    ``source_owner_id`` is the source's owner now: another than ``owner_id`` once the
    source, left free (no file found), was claimed by another owner's run.

    A run still ``scanning`` whose scan job ended without ending the scan (a worker
    killed on its last attempt, a cancel, a failure before the scan began) is read as
    ``scan_failed``, with the error code ``scan_job_ended`` (``from_row``)."""

    id: uuid.UUID
    source_id: uuid.UUID
    source_uri: str
    source_owner_id: str
    owner_id: str
    profile: str
    batch_size: int
    state: str
    scan_job_id: uuid.UUID | None
    scanned: int
    skipped: int
    scan_errors: int
    queued: int
    error: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime
    scan_finished_at: datetime | None
    scan_job: ScanJob | None = None  # None before it is set, and once it is archived

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> IngestRun:
        """The run of a row of ``RUN_COLUMNS``."""
        job = None
        if row["scan_job_state"] is not None:
            job = ScanJob(
                row["scan_job_state"],
                row["scan_job_attempt"],
                row["scan_job_max_attempts"],
                row["scan_job_error"],
            )
        ended = row["state"] == "scanning" and row["scan_job_id"] is not None
        if ended and (job is None or job.ended):
            error = {"code": SCAN_JOB_ENDED, "message": _scan_job_end(job)}
            row = {**row, "state": "scan_failed", "error": error}
        run: IngestRun = _from_row(cls, row, scan_job=job)
        return run


# The error code of a run whose scan job ended without ending its scan.
SCAN_JOB_ENDED = "scan_job_ended"


def _scan_job_end(job: ScanJob | None) -> str:
    """How the run's scan job ended (None: it was archived since)."""
    if job is None:
        return "its scan job ended without ending the scan (the job is archived)"
    verb = {"cancelled": "was cancelled", "failed": "failed"}.get(job.state, f"ended ({job.state})")
    if job.attempt == 0:
        return f"its scan job {verb} before it began"
    how = f"its scan job {verb} at attempt {job.attempt} of {job.max_attempts}"
    if job.error:
        how += f" ({job.error.get('code', 'unknown')}: {job.error.get('message', '')})"
    return f"{how}, before the scan ended"


@dataclass(frozen=True)
class IngestFile:
    """The checkpoint row of one source file. ``run_id``: the run that last queued it;
    ``batch_id``: the ``ingest.batch`` job that owns it now (None once indexed or failed);
    ``size`` in bytes, ``mtime_ns`` in ns since the epoch, as last scanned; ``attempts``:
    batches that started on it since it was last (re)queued."""

    source_id: uuid.UUID
    path: str
    media_id: uuid.UUID
    run_id: uuid.UUID
    batch_id: uuid.UUID | None
    size: int
    mtime_ns: int
    etag: str | None
    status: IngestStatus
    error_code: str | None
    error_message: str | None
    attempts: int
    sha256: str | None
    updated_at: datetime
    processed_at: datetime | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> IngestFile:
        file: IngestFile = _from_row(cls, {**row, "status": IngestStatus(row["status"])})
        return file


@dataclass(frozen=True)
class FileOutcome:
    """What a batch made of one of its files: ``INDEXED`` (with its ``sha256``), ``FAILED``
    (``error_code`` required, ``error_message``), or ``PENDING``: deferred (still being
    written) to the new batch ``batch_id`` (required), with the ``size`` (bytes) and
    ``mtime_ns`` it has now. Raises ValueError for any other combination."""

    path: str
    status: IngestStatus
    error_code: str | None = None
    error_message: str | None = None
    size: int | None = None
    mtime_ns: int | None = None
    sha256: str | None = None
    batch_id: uuid.UUID | None = None

    ALLOWED: ClassVar[frozenset[IngestStatus]] = frozenset(
        {IngestStatus.INDEXED, IngestStatus.FAILED, IngestStatus.PENDING}
    )

    def __post_init__(self) -> None:
        if self.status not in self.ALLOWED:
            raise ValueError(
                f"status: a batch outcome is indexed, failed or pending, not {self.status}"
            )
        if (self.status is IngestStatus.FAILED) != (self.error_code is not None):
            raise ValueError("error_code: required for a failed file, and only for one")
        if (self.status is IngestStatus.PENDING) != (self.batch_id is not None):
            raise ValueError("batch_id: required for a deferred file, and only for one")


@dataclass(frozen=True)
class RunStatus:
    """A run and its files: ``counts`` per status (every ``IngestStatus`` value, zeros
    included), ``failed_by_code`` (error code -> failed files, sorted by code; codes with
    no failed file left out; '' is shown as "unknown"), ``total`` files, ``done`` (indexed
    + failed), and ``last_update``: the run's latest change (its ``updated_at``: the latest
    file status change or scan counter update). All from ``ingest_counts``."""

    run: IngestRun
    counts: dict[str, int]
    failed_by_code: dict[str, int]
    total: int
    done: int
    last_update: datetime | None


class IngestRepository:
    """Sources, runs and the file checkpoint on ``pool`` (autocommit connections). Methods
    taking ``conn`` run inside the caller's transaction; the others use their own."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    def transaction(self) -> AbstractAsyncContextManager[Conn]:
        """A connection inside one transaction (commit on exit, rollback on error)."""
        return _transaction(self._pool)

    async def open_run(
        self,
        uri: str,
        owner_id: str,
        profile: str,
        batch_size: int,
        *,
        conn: Conn | None = None,
    ) -> IngestRun:
        """A new run (state ``scanning``) of the source ``uri`` (canonical, as the scan's
        ``Source.uri``), made on first use for ``owner_id``. With ``conn``, inside the
        caller's transaction (the source and the run roll back with it: open the run and
        enqueue its scan job in one transaction); without, in a transaction of its own.
        A source holds its uri while a run of it scans or a file of it is recorded; one
        that holds nothing (its runs found no approved file, or their scans failed) goes to
        whoever runs it next. Raises SourceOwnedElsewhere when the source holds files of
        another owner, SourceOverlaps when a new or free source holds or lies inside a
        source that holds files (of any owner; nothing written either way: with ``conn``,
        the caller's transaction stays usable), ValueError for a
        profile name that is not ``[a-z][a-z0-9_]{0,31}`` or a batch size outside 1..1000
        (migration 0008)."""
        if not PROFILE_PATTERN.fullmatch(profile):
            raise ValueError(f"profile: {profile!r} is not [a-z][a-z0-9_]{{0,31}}")
        if batch_size not in BATCH_SIZE_RANGE:
            raise ValueError(f"batch_size: {batch_size} is not between 1 and 1000")
        if conn is None:
            async with self._pool.connection() as own:  # autocommit: _open_run's transaction
                return await self._open_run(own, uri, owner_id, profile, batch_size)
        return await self._open_run(conn, uri, owner_id, profile, batch_size)

    async def _open_run(
        self, conn: Conn, uri: str, owner_id: str, profile: str, batch_size: int
    ) -> IngestRun:
        # One transaction (a savepoint inside the caller's): nothing is written when the
        # source is refused, and the caller's transaction goes on either way. A source
        # that holds files is run again as it is (a pair that overlapped before overlaps
        # were refused keeps running); a new or free one (sql.SOURCE_HOLDS) must not
        # overlap a source that holds files.
        async with conn.transaction():
            await conn.execute(sql.SOURCES_LOCK, {"key": SOURCES_LOCK_KEY})
            source = await (await conn.execute(sql.GET_SOURCE, {"uri": uri})).fetchone()
            if source is not None and source["holds"]:
                if source["owner_id"] != owner_id:
                    raise SourceOwnedElsewhere(uri, source["owner_id"])
            else:
                overlap = await (
                    await conn.execute(sql.OVERLAPPING_SOURCE, {"uri": uri})
                ).fetchone()
                if overlap is not None:
                    raise SourceOverlaps(
                        uri,
                        overlap["uri"],
                        inside=overlap["inside"],
                        owned_elsewhere=overlap["owner_id"] != owner_id,
                    )
                if source is None:
                    params = {"id": uuid.uuid4(), "uri": uri, "owner": owner_id}
                    source = await (await conn.execute(sql.INSERT_SOURCE, params)).fetchone()
                    assert source is not None
                elif source["owner_id"] != owner_id:
                    await conn.execute(sql.REOWN_SOURCE, {"id": source["id"], "owner": owner_id})
            params = {
                "id": uuid.uuid4(),
                "source": source["id"],
                "owner": owner_id,
                "profile": profile,
                "batch_size": batch_size,
            }
            row = await (await conn.execute(sql.INSERT_RUN, params)).fetchone()
        assert row is not None
        return IngestRun.from_row(row)

    async def set_scan_job(self, conn: Conn, run_id: uuid.UUID, job_id: uuid.UUID) -> None:
        """Remember the run's ``ingest.scan`` job."""
        await conn.execute(sql.SET_SCAN_JOB, (job_id, run_id))

    async def waiting_batches(self, run_id: uuid.UUID) -> tuple[int, Mapping[str, JSON] | None]:
        """The run's batch jobs queued again after a failed attempt (waiting out an outage,
        or a retry), and the last error (``{code, message, retryable}``) of the one with
        the most attempts: ``(0, None)`` when none waits."""
        async with self._pool.connection() as conn:
            row = await (await conn.execute(sql.WAITING_BATCHES, {"run": run_id})).fetchone()
        assert row is not None
        return int(row["batches"]), row["error"]

    async def get_run(self, run_id: uuid.UUID, *, owner_id: str | None = None) -> IngestRun | None:
        """The run, or None (also when ``owner_id`` is given and it is someone else's)."""
        statement = sql.GET_RUN if owner_id is None else sql.GET_RUN_OWNED
        async with self._pool.connection() as conn:
            row = await (
                await conn.execute(statement, {"id": run_id, "owner": owner_id})
            ).fetchone()
        return None if row is None else IngestRun.from_row(row)

    async def list_runs(
        self, *, owner_id: str | None = None, limit: int = 20
    ) -> list[tuple[IngestRun, int, int, int]]:
        """The newest ``limit`` runs (of ``owner_id`` when given), newest first, each with
        its files ``(total, done, failed)`` from the counters. Raises ValueError for a
        limit below 1."""
        if limit < 1:
            raise ValueError(f"limit: {limit} is below 1")
        async with self._pool.connection() as conn:
            rows = await (
                await conn.execute(sql.LIST_RUNS, {"owner": owner_id, "limit": limit})
            ).fetchall()
        return [
            (IngestRun.from_row(row), int(row["total"]), int(row["done"]), int(row["failed"]))
            for row in rows
        ]

    async def latest_run(self, *, owner_id: str | None = None) -> IngestRun | None:
        """The newest run (of ``owner_id`` when given), or None."""
        statement = sql.LATEST_RUN if owner_id is None else sql.LATEST_RUN_OWNED
        async with self._pool.connection() as conn:
            row = await (await conn.execute(statement, {"owner": owner_id})).fetchone()
        return None if row is None else IngestRun.from_row(row)

    async def record_scanned(
        self,
        conn: Conn,
        run: IngestRun,
        files: Sequence[ScannedLike],
        batch_ids: Sequence[uuid.UUID] = (),
    ) -> list[tuple[uuid.UUID | None, int]]:
        """Record one scan batch of ``run``'s source in one statement, putting the files
        that need a batch into batches as they are written; returns ``(batch id, files)``
        for each batch used, in batch order (the caller enqueues exactly those jobs).

        - a new path: inserted, pending, with a new v4 media id, ``run_id`` = ``run.id``;
        - a known path whose size, mtime_ns or etag differ: pending again (a new version of
          the same item: same media id), ``run_id`` = ``run.id``, attempts 0, error cleared;
        - a known path with the same size, mtime_ns and etag: untouched whatever its status
          (nothing is written; a failed file comes back only through ``retry_failed``).

        The k-th file written (input order; the first of a path listed twice counts) gets
        batch ``batch_ids[(k - 1) // run.batch_size]``; give ``batches_needed(len(files),
        run.batch_size)`` ids. Files past the ids given get no batch (None)."""
        unique: dict[str, ScannedLike] = {}
        for file in files:
            unique.setdefault(file.path, file)
        if not unique:
            return []
        batch = list(unique.values())
        params = {
            "source": run.source_id,
            "run": run.id,
            "paths": [f.path for f in batch],
            "sizes": [f.size for f in batch],
            "mtimes": [f.mtime_ns for f in batch],
            "etags": [f.etag for f in batch],
            "batches": list(batch_ids),
            "batch_size": run.batch_size,
        }
        rows = await (await conn.execute(sql.RECORD_SCANNED, params)).fetchall()
        return [(row["batch_id"], int(row["files"])) for row in rows]

    async def assign_batches(
        self,
        conn: Conn,
        source_id: uuid.UUID,
        batches: Sequence[tuple[uuid.UUID, Sequence[str]]],
    ) -> None:
        """Set the ``batch_id`` of each path of the source, in one statement: ``batches`` is
        ``(batch job id, paths)`` pairs."""
        ids = [batch_id for batch_id, paths in batches for _ in paths]
        paths = [path for _, batch_paths in batches for path in batch_paths]
        if paths:
            await conn.execute(
                sql.ASSIGN_BATCHES, {"source": source_id, "batches": ids, "paths": paths}
            )

    async def add_scan_counts(
        self, conn: Conn, run_id: uuid.UUID, *, scanned: int, skipped: int, errors: int, queued: int
    ) -> None:
        """Add one scan batch's counts (files) to the run's counters."""
        await conn.execute(
            sql.ADD_SCAN_COUNTS,
            {
                "id": run_id,
                "scanned": scanned,
                "skipped": skipped,
                "errors": errors,
                "queued": queued,
            },
        )

    async def restart_scan(self, run_id: uuid.UUID, job_id: uuid.UUID) -> None:
        """A scan attempt of the job ``job_id`` starts: its walk counts (scanned, skipped,
        errors) start from zero, since the attempt walks the whole source again; ``queued``
        stays (the files an earlier attempt recorded are not queued again). The job becomes
        the run's scan job: a failed scan job retried through the API is a new job, and
        the run is read by it (``IngestRun.from_row``)."""
        async with self._pool.connection() as conn:
            await conn.execute(sql.RESTART_SCAN, {"id": run_id, "job": job_id})

    async def finish_scan(
        self, run_id: uuid.UUID, *, error: Mapping[str, JSON] | None = None
    ) -> None:
        """The scan is over: state ``scanned``, or ``scan_failed`` with ``error``
        (``{code, message}``)."""
        params = {
            "id": run_id,
            "state": "scanned" if error is None else "scan_failed",
            "error": None if error is None else Jsonb(dict(error)),
        }
        async with self._pool.connection() as conn:
            await conn.execute(sql.FINISH_SCAN, params)

    async def start_batch(
        self, batch_id: uuid.UUID, *, count_attempts: bool = True
    ) -> tuple[IngestRun, list[IngestFile]] | None:
        """Count one more attempt on the batch's still-open files (``OPEN_STATUSES``),
        committed before this returns (before any decode: a file that kills its
        process is known by its attempts), and return them by path with their run (the run
        of the first, should they differ). ``count_attempts=False``: only read them (a
        retried batch records each file's attempt itself, ``record_attempt``). None when
        the batch has no open file (a rescan moved them all elsewhere, or they are done)."""
        statement = sql.START_BATCH if count_attempts else sql.READ_BATCH
        async with self.transaction() as conn:
            rows = await (await conn.execute(statement, (batch_id,))).fetchall()
            if not rows:
                return None
            files = sorted((IngestFile.from_row(row) for row in rows), key=lambda f: f.path)
            run = await (await conn.execute(sql.GET_RUN, {"id": files[0].run_id})).fetchone()
        assert run is not None  # ingest_files.run_id references ingest_runs
        return IngestRun.from_row(run), files

    async def record_attempt(self, batch_id: uuid.UUID, path: str) -> int | None:
        """One more attempt on one open file of the batch, committed before it returns
        (before its decode); its attempts now, or None when the batch no longer has it."""
        async with self._pool.connection() as conn:
            row = await (
                await conn.execute(sql.RECORD_ATTEMPT, {"batch": batch_id, "path": path})
            ).fetchone()
        return None if row is None else int(row["attempts"])

    async def give_back_attempts(self, batch_id: uuid.UUID, paths: Sequence[str]) -> int:
        """Undo the attempt counted on these open files of the batch: the attempt ended
        with its worker alive (an error, a shutdown), so no file of it crashed the worker.
        Returns the files changed."""
        if not paths:
            return 0
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                sql.GIVE_BACK_ATTEMPTS, {"batch": batch_id, "paths": list(paths)}
            )
        return cursor.rowcount

    async def hold_batch(
        self, conn: Conn, batch_id: uuid.UUID, attempt: int, paths: Sequence[str]
    ) -> set[str] | None:
        """Inside the batch's closing transaction: hold the job's row while this
        ``attempt`` still runs it, then lock the listed open files still in the batch (a
        file a rescan moved elsewhere is left out); return the paths this attempt may
        write, or None when the attempt no longer owns the job (its lease was taken over)."""
        held = await (
            await conn.execute(sql.HOLD_ATTEMPT, {"batch": batch_id, "attempt": attempt})
        ).fetchone()
        if held is None:
            return None
        if not paths:
            return set()
        rows = await (
            await conn.execute(sql.HOLD_BATCH, {"batch": batch_id, "paths": list(paths)})
        ).fetchall()
        return {row["path"] for row in rows}

    async def finish_batch(
        self, conn: Conn, batch_id: uuid.UUID, outcomes: Sequence[FileOutcome]
    ) -> int:
        """Write a batch's outcomes in one statement, only on rows still in this batch (a
        rescan that moved a file to another batch wins): indexed: ``processed_at`` now,
        ``sha256``, batch cleared; failed: code and message, batch cleared; pending
        (deferred): the new size and mtime_ns, the new batch, and the attempt
        ``start_batch`` counted given back (the file was never decoded). Returns the rows
        changed."""
        if not outcomes:
            return 0
        params = {
            "batch": batch_id,
            "paths": [o.path for o in outcomes],
            "statuses": [o.status.value for o in outcomes],
            "codes": [o.error_code for o in outcomes],
            "messages": [o.error_message for o in outcomes],
            "sizes": [o.size for o in outcomes],
            "mtimes": [o.mtime_ns for o in outcomes],
            "sha256s": [o.sha256 for o in outcomes],
            "batches": [o.batch_id for o in outcomes],
        }
        row = await (await conn.execute(sql.FINISH_BATCH, params)).fetchone()
        return 0 if row is None else int(row["n"])

    async def mark_ai_done(self, conn: Conn, media_ids: Sequence[uuid.UUID]) -> int:
        """Move the indexed files of ``media_ids`` to ``ai_done`` (image understanding
        finished them), in the caller's transaction; other files are left alone. Returns
        the files moved."""
        if not media_ids:
            return 0
        cursor = await conn.execute(sql.MARK_AI_DONE, {"ids": list(media_ids)})
        return cursor.rowcount

    async def fail_batch(self, conn: Conn, batch_id: uuid.UUID, code: str, message: str) -> int:
        """Fail every still-open file (``OPEN_STATUSES``) of the batch with ``code`` and
        ``message``; returns the rows changed."""
        params = {"batch": batch_id, "code": code, "message": message}
        row = await (await conn.execute(sql.FAIL_BATCH, params)).fetchone()
        return 0 if row is None else int(row["n"])

    async def retry_failed(
        self,
        conn: Conn,
        run: IngestRun,
        *,
        code: str | None = None,
        stranded_only: bool = False,
        limit: int = RETRY_PAGE_SIZE,
    ) -> list[str]:
        """One page of a retry, in the caller's transaction: at most ``limit`` (>= 1) files
        of ``run``'s source back to pending in ``run`` (their ``run_id``; the counters
        follow), attempts 0, error and batch cleared. They are the source's failed files by
        path, whichever of its runs queued them (a rescan leaves an unchanged failed file
        with the run that failed it); only those failed with ``code`` when given. Without a
        code, when those do not fill the page: the source's stranded files (see
        ``stranded``) by path. Returns the paths, sorted, for the caller to batch and
        ``assign_batches`` in the same transaction. The caller commits each page and calls
        again until a page holds fewer than ``limit`` files (a file a batch finished
        meanwhile is skipped, so a short page can leave one for the next retry). Raises
        ValueError for a limit below 1, or for a code with ``stranded_only``.
        ``UNKNOWN_CODE`` ("unknown", as ``status`` shows a failure without a code) picks the
        failed files without a code; ``stranded_only``, the stranded files alone. Picks
        nothing once the source is no longer ``run``'s owner's (claimed by another owner
        since it held no file)."""
        if limit < 1:
            raise ValueError(f"limit: {limit} is below 1")
        if stranded_only:
            if code is not None:
                raise ValueError("a code picks failed files, never stranded ones")
            statement = sql.RETRY_PAGE_STRANDED
        elif code is None:
            statement = sql.RETRY_PAGE_ALL
        else:
            statement = sql.RETRY_PAGE_UNKNOWN if code == UNKNOWN_CODE else sql.RETRY_PAGE_CODE
        params = {
            "source": run.source_id,
            "run": run.id,
            "owner": run.owner_id,
            "code": code,
            "limit": limit,
        }
        rows = await (await conn.execute(statement, params)).fetchall()
        return [row["path"] for row in rows]

    async def stranded(self, run_id: uuid.UUID) -> int:
        """The run's stranded files: open (``OPEN_STATUSES``) but with no batch job that is
        queued or running to take them (its job failed, was cancelled or is gone from
        ``jobs``, or the file has no batch). They stay open for good, so the run never
        finishes, until ``retry_failed`` re-queues them. An anti-join of the run's open files
        against ``jobs``, run on demand: a sequential scan of ``ingest_files`` (no index
        finds a run's open files), so call it for ``ingest status``, not per event."""
        async with self._pool.connection() as conn:
            row = await (await conn.execute(sql.STRANDED, {"run": run_id})).fetchone()
        return 0 if row is None else int(row["n"])

    async def source_stranded(self, run: IngestRun) -> tuple[int, int]:
        """The stranded files of ``run``'s source, whichever run queued them (what ``ingest
        retry --stranded`` queues), and how many of them are ``run``'s: ``(source, run)``.
        The same scan as ``stranded``."""
        params = {"source": run.source_id, "run": run.id}
        async with self._pool.connection() as conn:
            row = await (await conn.execute(sql.SOURCE_STRANDED, params)).fetchone()
        assert row is not None
        return int(row["n"]), int(row["run_n"])

    async def failed_files(
        self,
        source_id: uuid.UUID,
        *,
        after: str | None = None,
        limit: int = 1000,
        code: str | None = None,
    ) -> list[IngestFile]:
        """A page of the source's failed files, whichever of its runs queued them (only
        ``code``'s when given), by path, after the path ``after`` (keyset; None: from the
        start). Walks the partial index ``ingest_files_source_failed_path_idx`` (with a
        code, ``ingest_files_source_failed_idx``) of migration 0009."""
        statement = sql.FAILED_FILES_ALL if code is None else sql.FAILED_FILES_CODE
        params = {"source": source_id, "after": after or "", "limit": limit, "code": code}
        async with self._pool.connection() as conn:
            rows = await (await conn.execute(statement, params)).fetchall()
        return [IngestFile.from_row(row) for row in rows]

    async def source_failures(self, source_id: uuid.UUID) -> dict[str, int]:
        """The source's failed files per error code ('' shown as "unknown"), whichever of
        its runs queued them: what ``failed_files`` lists and ``retry_failed`` re-queues.
        O(failed files) (``ingest_files_source_failed_idx``)."""
        async with self._pool.connection() as conn:
            rows = await (await conn.execute(sql.SOURCE_FAILURES, {"source": source_id})).fetchall()
        return {str(row["error_code"]) or UNKNOWN_CODE: int(row["files"]) for row in rows}

    async def status(self, run_id: uuid.UUID, *, owner_id: str | None = None) -> RunStatus | None:
        """The run's counts and its failures per code, both from ``ingest_counts`` (no read
        of its file rows: milliseconds at 5M files). None when there is no such run (or it
        is not ``owner_id``'s, when given)."""
        statement = sql.GET_RUN if owner_id is None else sql.GET_RUN_OWNED
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            row = await (
                await conn.execute(statement, {"id": run_id, "owner": owner_id})
            ).fetchone()
            if row is None:
                return None
            counted = await (await conn.execute(sql.RUN_COUNTS, (run_id,))).fetchall()
        run = IngestRun.from_row(row)
        counts = {status.value: 0 for status in IngestStatus}
        by_code: dict[str, int] = {}
        for c in sorted(counted, key=lambda c: (str(c["status"]), str(c["error_code"]))):
            status, files = str(c["status"]), int(c["files"])
            counts[status] += files
            if status == IngestStatus.FAILED and files:
                # A failed file always has a code; '' ("unknown") only for one written by hand.
                code = str(c["error_code"]) or UNKNOWN_CODE
                by_code[code] = by_code.get(code, 0) + files
        return RunStatus(
            run=run,
            counts=counts,
            failed_by_code=by_code,
            total=sum(counts.values()),
            done=sum(counts[s] for s in DONE_STATUSES),
            last_update=run.updated_at,
        )


@asynccontextmanager
async def _transaction(pool: Pool) -> Any:
    async with pool.connection() as conn, conn.transaction():
        yield conn
