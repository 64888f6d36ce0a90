"""The interfaces of the queue layer, and what both queues share.

``QueueBackend`` is what a ``Worker`` (and a handler's ``JobContext``) needs from a queue.
Two implementations keep the same semantics: ``JobQueue`` (Postgres, ``queue.py``) and
``InMemoryQueue`` (``memory.py``, the test double). The same contract tests run against
both (``tests/contract/queue_contract.py``).

Around the queue a worker needs two more collaborators, injected through its constructor:
``Leases`` keeps the leases of running jobs alive (and reports cancel flags and leases
lost), ``Notifier`` wakes the claim loop when jobs may be claimable and tells it when a
running job is asked to stop. Postgres: ``LeaseKeeper`` and ``NotificationListener``.
In memory: ``InMemoryQueue.leases()`` and ``InMemoryQueue.notifier()``.

Every state change is reported as ``Transition`` values to the queue's ``TransitionHooks``
(``record`` inside the change, ``committed`` after it), built by the row-to-transition
functions below, so both queues produce the same events.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from mediajobs.errors import JobError
from mediajobs.queue.models import Cause, Enqueued, Job, JobSpec, JobState, Transition, new_job_id
from mediajobs.types import JSON

ConnT = TypeVar("ConnT", contravariant=True)


class TransitionHooks(Protocol[ConnT]):
    """The seam where job state changes meet events (the realtime layer implements it).
    ``ConnT`` is the queue's transaction handle: a psycopg connection for ``JobQueue``,
    None for ``InMemoryQueue``."""

    async def record(self, conn: ConnT, transitions: Sequence[Transition]) -> Any:
        """Runs inside the transaction that makes the transitions: write event rows here.
        What it returns is handed to ``committed``; raising undoes the change."""

    async def committed(self, recorded: Any) -> None:
        """Runs after that transaction committed, with what ``record`` returned: publish
        here. Must not raise."""


@dataclass(frozen=True)
class MaintenanceResult:
    ran: bool  # False when another process holds the maintenance lock
    archived: int = 0
    pruned: int = 0


class QueueBackend(Protocol):
    """A job queue as workers, handlers and the service use it. State changes of claimed
    jobs are fenced on ``id AND attempt AND state = running``: a stale attempt's writes are
    refused (False, None, an empty set, or ``LeaseLost``, as each method says)."""

    async def enqueue(self, spec: JobSpec) -> Enqueued:
        """Add one job; with an idempotency key already used by this owner, return that job."""

    async def enqueue_many(
        self, specs: Iterable[JobSpec], *, ids: Sequence[uuid.UUID] | None = None
    ) -> list[uuid.UUID]:
        """Add many jobs (no idempotency keys, no run_at), with the given ``ids`` (one per
        spec, made by ``new_job_id``) or new ones; returns their ids."""

    async def get(self, job_id: uuid.UUID) -> Job | None:
        """The job, hot or archived; None when unknown or pruned."""

    async def counts(self) -> dict[JobState, int]:
        """Jobs not yet archived, by state (every state present)."""

    async def claim(
        self, owner: str, limit: int, *, lease: float, kinds: Sequence[str] | None = None
    ) -> list[Job]:
        """Lease up to ``limit`` runnable jobs (priority, then run_at, then id) to ``owner``."""

    async def complete_many(self, done: Sequence[tuple[Job, JSON]]) -> set[uuid.UUID]:
        """Mark jobs succeeded; returns the ids whose attempt still held the job."""

    async def complete_encoded(
        self, done: Sequence[tuple[Job, JSON, str | None]]
    ) -> set[uuid.UUID]:
        """``complete_many`` for ``(job, result, encode_result(result))`` triples (group
        commit: the worker's completer writes every finished job in one call)."""

    async def complete(self, job: Job, result: JSON = None) -> bool:
        """Mark one job succeeded; False when this attempt no longer holds it."""

    async def fail(self, job: Job, error: JobError, *, delay: float) -> JobState | None:
        """Record a failed attempt: queued again after ``delay``, failed, or cancelled (its
        cancel was requested). None when fenced out."""

    async def mark_cancelled(self, job: Job) -> bool:
        """A running job stopped because it was asked to."""

    async def set_progress(self, job: Job, progress: float, message: str | None = None) -> bool:
        """Record progress; returns whether cancel was requested. Raises ``LeaseLost``."""

    async def hand_back(
        self, jobs: Sequence[Job], *, started: bool = True
    ) -> dict[uuid.UUID, JobState]:
        """Return unfinished jobs to the queue (``cancelled`` when their cancel was
        requested); with ``started=False`` the attempt does not count."""

    async def cancel(self, job_id: uuid.UUID, *, owner_id: str | None = None) -> JobState | None:
        """Cancel a queued job, or flag a running one (and notify its worker)."""

    async def reap_expired(self, limit: int = 1000) -> list[Transition]:
        """Requeue, fail or cancel the jobs whose lease expired."""

    async def notify_wakeup(self) -> None:
        """Tell every worker that claimable jobs may exist."""

    async def maintain(
        self, *, hot_age: float, archive_age: float, limit: int = 5000
    ) -> MaintenanceResult:
        """Archive jobs finished ``hot_age`` seconds ago; prune the archive and the
        idempotency keys after ``archive_age``."""


class Leases(Protocol):
    """Keeps the leases of a worker's running jobs alive, apart from the claim loop."""

    def start(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        lease: float,
        on_cancel: Callable[[uuid.UUID], None],
        on_lost: Callable[[uuid.UUID], None],
    ) -> None:
        """Start renewing every ``lease / 3`` seconds; report on ``loop`` the held jobs
        whose cancel was requested (``on_cancel``) and those no longer held (``on_lost``)."""

    def hold(self, job: Job) -> None:
        """Renew this attempt's lease from now on."""

    def release(self, job: Job) -> None:
        """Stop renewing this attempt's lease (it ended); a newer attempt of the same job
        held since stays held."""

    async def stop(self) -> None:
        """Stop renewing and release what ``start`` acquired."""


class Notifier(Protocol):
    """Wake-ups for the claim loop. A wake-up is only a hint: the worker also polls."""

    @property
    def connected(self) -> asyncio.Event:
        """Set while notifications are delivered."""

    async def run(
        self, on_wakeup: Callable[[], None], on_cancel: Callable[[uuid.UUID], None]
    ) -> None:
        """Until cancelled: call ``on_wakeup()`` when jobs may be claimable (and after each
        (re)connect, since hints sent meanwhile are lost), ``on_cancel(job_id)`` when a
        running job is asked to stop."""


def renewal_outcomes(
    held: Mapping[uuid.UUID, int],
    current: Mapping[uuid.UUID, int],
    still_ours: Mapping[Any, bool],
) -> Iterator[tuple[uuid.UUID, bool]]:
    """What a lease renewal of the ``held`` jobs (``{id: attempt}``) reports, given the jobs
    held now (``current``) and the renewal's answer (``still_ours``: ``{id: cancel flag}``
    of the leases it renewed): ``(id, True)`` for each lease lost, ``(id, False)`` for each
    cancel requested. Jobs that finished while it renewed are skipped."""
    for job_id, attempt in held.items():
        if current.get(job_id) != attempt:
            continue  # finished while we were renewing
        if job_id not in still_ours:
            yield job_id, True
        elif still_ours[job_id]:
            yield job_id, False


def encode_result(result: JSON) -> str | None:
    """A handler's return value as stored text; None stays SQL NULL. Raises ``TypeError``
    or ``ValueError`` for a value JSON cannot hold."""
    return None if result is None else json.dumps(result, allow_nan=False)


def check_bulk_spec(spec: JobSpec) -> None:
    """Refuse what ``enqueue_many`` does not take: idempotency keys and ``run_at``."""
    if spec.idempotency_key is not None:
        raise ValueError("enqueue_many does not take idempotency keys; use enqueue")
    if spec.run_at is not None:
        raise ValueError("enqueue_many takes delay, not run_at")


def bulk_ids(specs: Sequence[JobSpec], ids: Sequence[uuid.UUID] | None) -> list[uuid.UUID]:
    """The ids of an ``enqueue_many``: ``ids`` as given (one per spec) or new ones. Raises
    ``ValueError`` when the counts differ, and for a spec ``check_bulk_spec`` refuses."""
    given = [new_job_id() for _ in specs] if ids is None else list(ids)
    if len(given) != len(specs):
        raise ValueError(f"{len(given)} ids for {len(specs)} jobs")
    for spec in specs:
        check_bulk_spec(spec)
    return given


def cancelled_error(detail: str) -> dict[str, JSON]:
    """The error of a running job that ended cancelled (``sql._cancelled_error`` in SQL)."""
    message = f"cancelled while running; {detail}"
    return {"code": "cancelled", "message": message, "retryable": False}


def lease_expired_error(attempt: int, max_attempts: int) -> dict[str, JSON]:
    """The error of a job whose worker stopped renewing its lease (``sql.REAP_EXPIRED``)."""
    return {
        "code": "lease_expired",
        "message": f"the worker running attempt {attempt} stopped renewing its lease",
        "retryable": attempt < max_attempts,
    }


# -- changed rows as transitions (both queues map their changes through these) ----------


def _transition(row: Mapping[str, Any], state: JobState, cause: Cause, **extra: Any) -> Transition:
    return Transition(
        row["id"], row["owner_id"], row["kind"], state, row["attempt"], cause, **extra
    )


def running(row: Mapping[str, Any]) -> Transition:
    """A claimed job."""
    return _transition(row, JobState.RUNNING, Cause.CLAIMED, progress=0.0)


def succeeded(job: Job, result: JSON) -> Transition:
    """A completed job."""
    return Transition(
        job.id,
        job.owner_id,
        job.kind,
        JobState.SUCCEEDED,
        job.attempt,
        Cause.SUCCEEDED,
        progress=1.0,
        result=result,
    )


def progressed(job: Job, progress: float, message: str | None) -> Transition:
    """A progress report of a running job."""
    return Transition(
        job.id,
        job.owner_id,
        job.kind,
        JobState.RUNNING,
        job.attempt,
        Cause.PROGRESS,
        progress=progress,
        message=message,
    )


def queued(row: Mapping[str, Any]) -> Transition:
    """A job handed back by a stopping worker."""
    if row.get("state") == JobState.CANCELLED:  # handed back after its cancel was requested
        return cancelled(row)
    return _transition(row, JobState.QUEUED, Cause.REQUEUED, message="handed back")


def cancelled(row: Mapping[str, Any]) -> Transition:
    """A job that ended cancelled."""
    return _transition(row, JobState.CANCELLED, Cause.CANCELLED)


def failed_or_retrying(row: Mapping[str, Any]) -> Transition:
    """A failed attempt."""
    state = JobState(row["state"])
    if state is JobState.CANCELLED:  # it failed after its cancel was requested
        return cancelled(row)
    cause = Cause.RETRYING if state is JobState.QUEUED else Cause.FAILED
    return _transition(row, state, cause, error=row.get("error"))


def requeued_or_failed(row: Mapping[str, Any]) -> Transition:
    """A job whose lease expired."""
    state = JobState(row["state"])
    if state is JobState.CANCELLED:  # its worker died after its cancel was requested
        return cancelled(row)
    cause = Cause.REQUEUED if state is JobState.QUEUED else Cause.FAILED
    return _transition(row, state, cause, message="lease expired", error=row.get("error"))


def cancel_outcome(row: Mapping[str, Any]) -> Transition:
    """A cancel request: a running job stays running until its handler stops; only a
    queued one is cancelled now."""
    state = JobState(row["state"])
    if state is JobState.CANCELLED:
        return _transition(row, state, Cause.CANCELLED)
    return _transition(row, state, Cause.CANCEL_REQUESTED, message="cancel requested")
