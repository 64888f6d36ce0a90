"""The Postgres job queue: enqueue, claim, finish, recover, retain.

``JobQueue`` is the only code that writes the ``jobs`` table. It takes its pool through the
constructor; the caller owns the pool. State changes of claimed jobs are fenced on
``id AND attempt AND state = 'running'``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import DictRow
from psycopg.types.json import Jsonb

from mediajobs.db.pool import Pool
from mediajobs.errors import JobError, LeaseLost
from mediajobs.queue import sql
from mediajobs.queue.base import (
    MaintenanceResult,
    TransitionHooks,
    bulk_ids,
    cancel_outcome,
    cancelled,
    encode_result,
    failed_or_retrying,
    progressed,
    queued,
    requeued_or_failed,
    running,
    succeeded,
)
from mediajobs.queue.models import Enqueued, Job, JobSpec, JobState, Transition, new_job_id
from mediajobs.types import JSON

Conn = psycopg.AsyncConnection[DictRow]
BULK_CHUNK = 5000


class JobQueue:
    """Postgres-backed job queue; see the module docstring."""

    def __init__(self, pool: Pool, *, hooks: TransitionHooks[Conn] | None = None) -> None:
        self._pool = pool
        self._hooks = hooks

    @property
    def pool(self) -> Pool:
        return self._pool

    # -- producing ---------------------------------------------------------------------

    async def enqueue(self, spec: JobSpec, *, conn: Conn | None = None) -> Enqueued:
        """Insert one job. With ``conn``, inside the caller's transaction: a rollback leaves
        no job. With an idempotency key already used by this owner, returns that job."""
        if conn is not None:
            return await self._enqueue(conn, spec)
        async with self._pool.connection() as own, own.transaction():
            return await self._enqueue(own, spec)

    async def _enqueue(self, conn: Conn, spec: JobSpec) -> Enqueued:
        params = _insert_params(spec)
        if spec.idempotency_key is not None:
            # The key row is inserted first: a concurrent enqueue with the same key waits on
            # it, then finds the winner's job (or takes over if the winner rolled back).
            async with conn.transaction():
                row = await (await conn.execute(sql.INSERT_JOB_KEY, params)).fetchone()
                if row is None:
                    found = await (
                        await conn.execute(
                            sql.SELECT_JOB_KEY,
                            {"owner_id": spec.owner_id, "key": spec.idempotency_key},
                        )
                    ).fetchone()
                    assert found is not None  # the conflicting row is committed and visible
                    return Enqueued(id=found["job_id"], created=False)
                await conn.execute(sql.INSERT_JOB, params)
        else:
            await conn.execute(sql.INSERT_JOB, params)
        return Enqueued(id=params["id"], created=True)

    async def enqueue_many(
        self,
        specs: Iterable[JobSpec],
        *,
        conn: Conn | None = None,
        ids: Sequence[uuid.UUID] | None = None,
    ) -> list[uuid.UUID]:
        """Insert many jobs with few statements (bulk producers). Idempotency keys are not
        supported here; use ``enqueue`` for those. ``ids``, one per spec, are the jobs'
        ids when the caller made them beforehand (``new_job_id``: a producer that writes
        them into its own rows in the same statement that decides how many jobs it needs);
        otherwise new ones are made. Raises ``ValueError`` for a spec ``check_bulk_spec``
        refuses or when ``ids`` and ``specs`` differ in length."""
        specs = list(specs)
        given = bulk_ids(specs, ids)
        if conn is None:
            async with self._pool.connection() as own, own.transaction():
                return await self.enqueue_many(specs, conn=own, ids=given)
        for start in range(0, len(specs), BULK_CHUNK):
            end = start + BULK_CHUNK
            await self._insert_bulk(conn, specs[start:end], given[start:end])
        return given

    async def _insert_bulk(
        self, conn: Conn, specs: Sequence[JobSpec], ids: Sequence[uuid.UUID]
    ) -> None:
        await conn.execute(
            sql.INSERT_JOBS_BULK,
            {
                "ids": ids,
                "kinds": [s.kind for s in specs],
                "owner_ids": [s.owner_id for s in specs],
                "payloads": [json.dumps(dict(s.payload)) for s in specs],
                "priorities": [s.priority for s in specs],
                "delays": [float(s.delay) for s in specs],
                "max_attempts": [s.max_attempts for s in specs],
            },
        )

    # -- reading -----------------------------------------------------------------------

    async def get(self, job_id: uuid.UUID) -> Job | None:
        """The job, from the hot table or the archive; None when unknown or pruned."""
        async with self._pool.connection() as conn:
            row = await (await conn.execute(sql.SELECT_JOB, {"id": job_id})).fetchone()
        return None if row is None else Job.from_row(row)

    async def for_owner(
        self,
        owner_id: str,
        *,
        state: JobState | None = None,
        kind: str | None = None,
        before: tuple[datetime, uuid.UUID] | None = None,
        limit: int = 50,
    ) -> list[Job]:
        """The owner's jobs (hot and archived), newest first, before the keyset ``before``."""
        where = ["owner_id = %(owner)s"]
        params: dict[str, Any] = {"owner": owner_id, "limit": limit}
        if state is not None:
            where.append("state = %(state)s")
            params["state"] = state.value
        if kind is not None:
            where.append("kind = %(kind)s")
            params["kind"] = kind
        if before is not None:
            where.append("(created_at, id) < (%(at)s, %(id)s)")
            params["at"], params["id"] = before
        condition = " AND ".join(where)
        statement = (
            f"(SELECT {sql.JOB_COLUMNS} FROM jobs WHERE {condition} "
            "ORDER BY created_at DESC, id DESC LIMIT %(limit)s) UNION ALL "
            f"(SELECT {sql.JOB_COLUMNS} FROM jobs_archive WHERE {condition} "
            "ORDER BY created_at DESC, id DESC LIMIT %(limit)s) "
            "ORDER BY created_at DESC, id DESC LIMIT %(limit)s"
        )
        async with self._pool.connection() as conn:
            rows = await (await conn.execute(statement, params)).fetchall()
        return [Job.from_row(row) for row in rows]

    async def counts(self) -> dict[JobState, int]:
        """Jobs in the hot table by state (every state present, zero when none)."""
        async with self._pool.connection() as conn:
            rows = await (await conn.execute(sql.COUNT_BY_STATE)).fetchall()
        counts = dict.fromkeys(JobState, 0)
        counts.update({JobState(row["state"]): row["n"] for row in rows})
        return counts

    async def oldest_queued_age(self) -> float:
        """Seconds the oldest runnable job has waited (0 when none)."""
        async with self._pool.connection() as conn:
            row = await (await conn.execute(sql.OLDEST_QUEUED)).fetchone()
        return float(row["age"]) if row and row["age"] is not None else 0.0

    # -- consuming (workers) -----------------------------------------------------------

    async def claim(
        self, owner: str, limit: int, *, lease: float, kinds: Sequence[str] | None = None
    ) -> list[Job]:
        """Lease up to ``limit`` runnable jobs to ``owner`` for ``lease`` seconds."""
        params = {
            "owner": owner,
            "limit": limit,
            "lease": lease,
            "kinds": list(kinds) if kinds else None,
        }
        rows = await self._change(sql.CLAIM, params, running)
        return [Job.from_row(row) for row in rows]

    async def complete_many(self, done: Sequence[tuple[Job, JSON]]) -> set[uuid.UUID]:
        """Mark jobs succeeded with their results in one statement; returns the ids whose
        attempt still held the job (the others were fenced out). Raises ``TypeError`` or
        ``ValueError`` when a result is not JSON."""
        return await self.complete_encoded(
            [(job, result, encode_result(result)) for job, result in done]
        )

    async def complete_encoded(
        self, done: Sequence[tuple[Job, JSON, str | None]]
    ) -> set[uuid.UUID]:
        """``complete_many`` for ``(job, result, encode_result(result))`` triples: the worker
        encodes each result once, when its handler returns."""
        by_id = {job.id: (job, result) for job, result, _ in done}
        params = {
            "ids": [job.id for job, _, _ in done],
            "attempts": [job.attempt for job, _, _ in done],
            "results": [encoded for _, _, encoded in done],
        }

        rows = await self._change(
            sql.COMPLETE_MANY, params, lambda row: succeeded(*by_id[row["id"]])
        )
        return {row["id"] for row in rows}

    async def complete(self, job: Job, result: JSON = None) -> bool:
        """Mark one job succeeded; False when this attempt no longer holds it."""
        return job.id in await self.complete_many([(job, result)])

    async def fail(self, job: Job, error: JobError, *, delay: float) -> JobState | None:
        """Record a failed attempt: requeued after ``delay`` when the error is retryable and
        attempts remain, else failed; cancelled, whatever the error, when its cancel was
        requested. None when this attempt no longer holds the job."""
        params = {
            "id": job.id,
            "attempt": job.attempt,
            "retry": error.retryable,
            "delay": delay,
            "error": Jsonb(error.to_dict()),
        }
        rows = await self._change(sql.FAIL, params, failed_or_retrying)
        return JobState(rows[0]["state"]) if rows else None

    async def mark_cancelled(self, job: Job) -> bool:
        """A running job stopped because it was asked to."""
        rows = await self._change(
            sql.MARK_CANCELLED, {"id": job.id, "attempt": job.attempt}, cancelled
        )
        return bool(rows)

    async def set_progress(self, job: Job, progress: float, message: str | None = None) -> bool:
        """Record progress (0..1) of a running job; returns whether cancel was requested.
        Raises ``LeaseLost`` when this attempt no longer holds the job."""
        if not 0.0 <= progress <= 1.0:
            raise ValueError("progress must be between 0 and 1")
        params = {"id": job.id, "attempt": job.attempt, "progress": progress, "message": message}

        rows = await self._change(
            sql.SET_PROGRESS, params, lambda row: progressed(job, progress, message)
        )
        if not rows:
            raise LeaseLost(f"job {job.id} attempt {job.attempt} no longer holds its lease")
        return bool(rows[0]["cancel_requested"])

    async def hand_back(
        self, jobs: Sequence[Job], *, started: bool = True
    ) -> dict[uuid.UUID, JobState]:
        """Return unfinished jobs to the queue at once (graceful shutdown); a job whose
        cancel was requested ends cancelled instead. With ``started=False`` (claimed, handler
        never called) the attempt does not count. Returns the state of each job this call
        changed (``queued`` or ``cancelled``), by id."""
        if not jobs:
            return {}
        params = {
            "ids": [job.id for job in jobs],
            "attempts": [job.attempt for job in jobs],
            "started": started,
        }
        rows = await self._change(sql.HAND_BACK, params, queued)
        if rows:
            await self.notify_wakeup()
        return {row["id"]: JobState(row["state"]) for row in rows}

    async def cancel(self, job_id: uuid.UUID, *, owner_id: str | None = None) -> JobState | None:
        """Cancel a queued job at once, or ask a running one to stop. Returns the state after
        the call, or None when no unfinished job with that id (and owner) exists."""
        params = {"id": job_id, "owner_id": owner_id}
        statement = sql.CANCEL_ANY_OWNER if owner_id is None else sql.CANCEL_FOR_OWNER
        rows = await self._change(statement, params, cancel_outcome)
        if not rows:
            return None
        state = JobState(rows[0]["state"])
        if state is JobState.RUNNING:
            async with self._pool.connection() as conn:
                await conn.execute(sql.NOTIFY_CANCEL, {"id": str(job_id)})
        return state

    async def reap_expired(self, limit: int = 1000) -> list[Transition]:
        """Requeue (or fail, when out of attempts; or cancel, when its cancel was requested)
        jobs whose lease expired."""
        transitions: list[Transition] = []
        rows = await self._change(
            sql.REAP_EXPIRED, {"limit": limit}, requeued_or_failed, collect=transitions
        )
        if any(row["state"] == JobState.QUEUED for row in rows):
            await self.notify_wakeup()
        return transitions

    async def notify_wakeup(self) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(sql.NOTIFY_WAKEUP)

    # -- retention ---------------------------------------------------------------------

    async def maintain(
        self, *, hot_age: float, archive_age: float, limit: int = 5000
    ) -> MaintenanceResult:
        """Move jobs finished more than ``hot_age`` seconds ago to the archive; delete archived
        jobs and idempotency keys older than ``archive_age``. One process at a time."""
        async with self._pool.connection() as conn, conn.transaction():
            row = await (
                await conn.execute(sql.TRY_MAINTENANCE_LOCK, {"key": sql.MAINTENANCE_LOCK_KEY})
            ).fetchone()
            if not row or not row["locked"]:
                return MaintenanceResult(ran=False)
            archived = (
                await conn.execute(sql.ARCHIVE_FINISHED, {"age": hot_age, "limit": limit})
            ).rowcount
            pruned = (
                await conn.execute(sql.PRUNE_ARCHIVE, {"age": archive_age, "limit": limit})
            ).rowcount
            await conn.execute(sql.PRUNE_KEYS, {"age": archive_age, "limit": limit})
        return MaintenanceResult(ran=True, archived=max(archived, 0), pruned=max(pruned, 0))

    # -- plumbing ----------------------------------------------------------------------

    async def _change(
        self,
        statement: str,
        params: Mapping[str, Any],
        transition: Callable[[Mapping[str, Any]], Transition],
        *,
        collect: list[Transition] | None = None,
    ) -> list[DictRow]:
        """Run a state-changing statement; with hooks, in a transaction that also records
        the transitions, then tell the hooks after commit."""
        recorded: Any = None
        async with self._pool.connection() as conn:
            if self._hooks is None and collect is None:
                return await (await conn.execute(statement, params)).fetchall()
            async with conn.transaction():
                rows = await (await conn.execute(statement, params)).fetchall()
                transitions = [transition(row) for row in rows]
                if transitions and self._hooks is not None:
                    recorded = await self._hooks.record(conn, transitions)
        if collect is not None:
            collect.extend(transitions)
        if transitions and self._hooks is not None:
            await self._hooks.committed(recorded)
        return rows


def _insert_params(spec: JobSpec) -> dict[str, Any]:
    return {
        "id": new_job_id(),
        "kind": spec.kind,
        "owner_id": spec.owner_id,
        "payload": Jsonb(dict(spec.payload)),
        "priority": spec.priority,
        "run_at": spec.run_at,
        "delay": float(spec.delay),
        "max_attempts": spec.max_attempts,
        "idempotency_key": spec.idempotency_key,
    }
