"""``InMemoryQueue``: the job queue in this process, a first-class test double.

It keeps ``JobQueue``'s semantics without Postgres (procrastinate's ``InMemoryConnector``
is the model), and the same contract tests run against both
(``tests/contract/queue_contract.py``):

- the same states, ``run_at`` and claim order (priority, then run_at, then id), attempts,
  idempotency keys per owner (kept until pruned, as ``job_keys``), the hot table and the
  archive;
- fencing on ``id AND attempt AND state = running`` for every write of a claimed job;
- leases that expire on an injectable clock (``ManualClock``): nothing waits on real time;
- the same ``Transition`` values, reported to ``TransitionHooks[None]`` (``record`` inside
  the change, which is undone when it raises, then ``committed``), so the events are the
  ones the Postgres queue produces;
- wake-ups instead of LISTEN/NOTIFY: ``notifier()`` gives a worker its ``Notifier``
  (a hint on every enqueue, hand-back and requeue; the job id when a running job is asked
  to stop), ``leases()`` its ``Leases``.

Each change runs under one lock, as one statement runs in one transaction. Payloads,
results and errors are copied through JSON on the way in and jobs are copied on the way
out, so no caller shares a mutable value with the queue. There is no caller's transaction
(``enqueue`` takes no ``conn``) and no maintenance lock between processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from mediajobs.errors import JobError, LeaseLost
from mediajobs.queue.base import (
    Leases,
    MaintenanceResult,
    Notifier,
    QueueBackend,
    TransitionHooks,
    bulk_ids,
    cancel_outcome,
    cancelled,
    cancelled_error,
    encode_result,
    failed_or_retrying,
    lease_expired_error,
    progressed,
    queued,
    renewal_outcomes,
    requeued_or_failed,
    running,
    succeeded,
)
from mediajobs.queue.models import Enqueued, Job, JobSpec, JobState, Transition, new_job_id
from mediajobs.types import JSON

Clock = Callable[[], datetime]
HANDED_BACK = "handed back by a stopping worker"


class ManualClock:
    """A clock that moves only when told (``advance``), plus ``tick`` at each reading, so
    two readings are never equal (each Postgres statement also sees a later ``now()``)."""

    def __init__(self, start: datetime | None = None, *, tick: float = 1e-6) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)
        self._tick = timedelta(seconds=tick)

    def __call__(self) -> datetime:
        self._now += self._tick
        return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock ``seconds`` forward."""
        self._now += timedelta(seconds=seconds)


def _wall_clock() -> datetime:
    return datetime.now(UTC)


class InMemoryQueue:
    """The queue in a dict; see the module docstring. ``clock`` gives the queue's now
    (default: the wall clock)."""

    def __init__(
        self, *, hooks: TransitionHooks[None] | None = None, clock: Clock | None = None
    ) -> None:
        self._hooks = hooks
        self._clock = clock or _wall_clock
        self._jobs: dict[uuid.UUID, Job] = {}  # the hot table
        self._archive: dict[uuid.UUID, Job] = {}
        self._keys: dict[tuple[str, str], tuple[uuid.UUID, datetime]] = {}  # job_keys
        self._lock = asyncio.Lock()
        self._listeners: set[_Listener] = set()

    @property
    def jobs(self) -> list[Job]:
        """Every job not yet archived, oldest first (copies: for assertions)."""
        return copy.deepcopy(sorted(self._jobs.values(), key=lambda job: job.id))

    def reset(self) -> None:
        """Forget every job, archived job and idempotency key."""
        self._jobs.clear()
        self._archive.clear()
        self._keys.clear()

    # -- a worker's collaborators ------------------------------------------------------

    def notifier(self) -> InMemoryNotifier:
        """A ``Notifier`` that hears this queue's wake-ups and cancel requests."""
        return InMemoryNotifier(self)

    def leases(self) -> InMemoryLeases:
        """``Leases`` that renew against this queue's clock."""
        return InMemoryLeases(self)

    # -- producing ---------------------------------------------------------------------

    async def enqueue(self, spec: JobSpec) -> Enqueued:
        """Add one job. With an idempotency key already used by this owner, returns that
        job (also after it was archived, until the key is pruned)."""
        async with self._lock:
            now = self._clock()
            if spec.idempotency_key is not None:
                found = self._keys.get((spec.owner_id, spec.idempotency_key))
                if found is not None:
                    return Enqueued(id=found[0], created=False)
            job = self._new_job(spec, now)
            self._jobs[job.id] = job
            if spec.idempotency_key is not None:
                self._keys[(spec.owner_id, spec.idempotency_key)] = (job.id, now)
        self._wake()
        return Enqueued(id=job.id, created=True)

    async def enqueue_many(
        self, specs: Iterable[JobSpec], *, ids: Sequence[uuid.UUID] | None = None
    ) -> list[uuid.UUID]:
        """Add many jobs at once, with the given ``ids`` (one per spec) or new ones.
        Idempotency keys and run_at are refused, as by ``JobQueue.enqueue_many``; so is an
        id given twice or naming an existing job (``ValueError``; Postgres: a unique
        violation)."""
        specs = list(specs)
        given = bulk_ids(specs, ids)
        async with self._lock:
            if len(set(given)) != len(given) or any(job_id in self._jobs for job_id in given):
                raise ValueError("a job id is given twice or names a job that exists")
            now = self._clock()
            jobs = [
                self._new_job(spec, now, job_id) for spec, job_id in zip(specs, given, strict=True)
            ]
            self._jobs.update((job.id, job) for job in jobs)
        if jobs:
            self._wake()
        return [job.id for job in jobs]

    @staticmethod
    def _new_job(spec: JobSpec, now: datetime, job_id: uuid.UUID | None = None) -> Job:
        return Job(
            id=new_job_id() if job_id is None else job_id,
            kind=spec.kind,
            owner_id=spec.owner_id,
            payload=_json_copy(dict(spec.payload)),
            state=JobState.QUEUED,
            priority=spec.priority,
            run_at=(spec.run_at or now) + timedelta(seconds=spec.delay),
            attempt=0,
            max_attempts=spec.max_attempts,
            lease_owner=None,
            lease_expires_at=None,
            cancel_requested=False,
            progress=0.0,
            message=None,
            result=None,
            error=None,
            idempotency_key=spec.idempotency_key,
            created_at=now,
            updated_at=now,
            started_at=None,
            finished_at=None,
        )

    # -- reading -----------------------------------------------------------------------

    async def get(self, job_id: uuid.UUID) -> Job | None:
        """The job, hot or archived; None when unknown or pruned."""
        job = self._jobs.get(job_id) or self._archive.get(job_id)
        return None if job is None else copy.deepcopy(job)

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
        found = [
            job
            for job in (*self._jobs.values(), *self._archive.values())
            if job.owner_id == owner_id
            and (state is None or job.state is state)
            and (kind is None or job.kind == kind)
            and (before is None or (job.created_at, job.id) < before)
        ]
        found.sort(key=lambda job: (job.created_at, job.id), reverse=True)
        return copy.deepcopy(found[:limit])

    async def counts(self) -> dict[JobState, int]:
        """Jobs not yet archived, by state (every state present, zero when none)."""
        counts = dict.fromkeys(JobState, 0)
        for job in self._jobs.values():
            counts[job.state] += 1
        return counts

    async def oldest_queued_age(self) -> float:
        """Seconds the oldest runnable job has waited (0 when none)."""
        now = self._clock()
        runnable = [j.run_at for j in self._jobs.values() if _runnable(j, now)]
        return (now - min(runnable)).total_seconds() if runnable else 0.0

    # -- consuming (workers) -----------------------------------------------------------

    async def claim(
        self, owner: str, limit: int, *, lease: float, kinds: Sequence[str] | None = None
    ) -> list[Job]:
        """Lease up to ``limit`` runnable jobs to ``owner`` for ``lease`` seconds."""

        def change(now: datetime) -> list[Job]:
            wanted = set(kinds) if kinds else None
            available = sorted(
                (
                    job
                    for job in self._jobs.values()
                    if _runnable(job, now) and (wanted is None or job.kind in wanted)
                ),
                key=lambda job: (-job.priority, job.run_at, job.id),
            )
            return [
                replace(
                    job,
                    state=JobState.RUNNING,
                    attempt=job.attempt + 1,
                    lease_owner=owner,
                    lease_expires_at=now + timedelta(seconds=lease),
                    started_at=now,
                    updated_at=now,
                    progress=0.0,
                    message=None,
                )
                for job in available[:limit]
            ]

        claimed = await self._change(change, lambda job: running(_row(job)))
        return copy.deepcopy(claimed)

    async def complete_many(self, done: Sequence[tuple[Job, JSON]]) -> set[uuid.UUID]:
        """Mark jobs succeeded; returns the ids whose attempt still held the job. Raises
        ``TypeError`` or ``ValueError`` when a result is not JSON."""
        return await self.complete_encoded(
            [(job, result, encode_result(result)) for job, result in done]
        )

    async def complete_encoded(
        self, done: Sequence[tuple[Job, JSON, str | None]]
    ) -> set[uuid.UUID]:
        """``complete_many`` for ``(job, result, encode_result(result))`` triples."""
        accepted: dict[uuid.UUID, tuple[Job, JSON]] = {}

        def change(now: datetime) -> list[Job]:
            changed = []
            for job, result, encoded in done:
                current = self._held(job)
                if current is None or job.id in accepted:
                    continue
                accepted[job.id] = (job, result)
                changed.append(
                    replace(
                        current,
                        state=JobState.SUCCEEDED,
                        result=None if encoded is None else json.loads(encoded),
                        progress=1.0,
                        message=None,
                        error=None,
                        finished_at=now,
                        updated_at=now,
                        lease_owner=None,
                        lease_expires_at=None,
                    )
                )
            return changed

        changed = await self._change(change, lambda job: succeeded(*accepted[job.id]))
        return {job.id for job in changed}

    async def complete(self, job: Job, result: JSON = None) -> bool:
        """Mark one job succeeded; False when this attempt no longer holds it."""
        return job.id in await self.complete_many([(job, result)])

    async def fail(self, job: Job, error: JobError, *, delay: float) -> JobState | None:
        """Record a failed attempt (see ``JobQueue.fail``); None when fenced out."""
        stored_error = _json_copy(error.to_dict())

        def change(now: datetime) -> list[Job]:
            current = self._held(job)
            if current is None:
                return []
            common: dict[str, Any] = {"updated_at": now, "lease_owner": None}
            common["lease_expires_at"] = None
            if current.cancel_requested:
                detail = f"the attempt then ended with {error.code}"
                return [
                    replace(
                        current,
                        state=JobState.CANCELLED,
                        finished_at=now,
                        error=cancelled_error(detail),
                        **common,
                    )
                ]
            if error.retryable and current.attempt < current.max_attempts:
                return [
                    replace(
                        current,
                        state=JobState.QUEUED,
                        run_at=now + timedelta(seconds=delay),
                        finished_at=None,
                        error=stored_error,
                        **common,
                    )
                ]
            return [
                replace(
                    current, state=JobState.FAILED, finished_at=now, error=stored_error, **common
                )
            ]

        changed = await self._change(change, lambda job: failed_or_retrying(_row(job)))
        return changed[0].state if changed else None

    async def mark_cancelled(self, job: Job) -> bool:
        """A running job stopped because it was asked to."""

        def change(now: datetime) -> list[Job]:
            current = self._held(job)
            if current is None:
                return []
            return [
                replace(
                    current,
                    state=JobState.CANCELLED,
                    finished_at=now,
                    updated_at=now,
                    lease_owner=None,
                    lease_expires_at=None,
                    error=cancelled_error("the handler stopped"),
                )
            ]

        return bool(await self._change(change, lambda job: cancelled(_row(job))))

    async def set_progress(self, job: Job, progress: float, message: str | None = None) -> bool:
        """Record progress (0..1) of a running job; returns whether cancel was requested.
        Raises ``LeaseLost`` when this attempt no longer holds the job."""
        if not 0.0 <= progress <= 1.0:
            raise ValueError("progress must be between 0 and 1")

        def change(now: datetime) -> list[Job]:
            current = self._held(job)
            if current is None:
                return []
            return [replace(current, progress=progress, message=message, updated_at=now)]

        changed = await self._change(change, lambda _: progressed(job, progress, message))
        if not changed:
            raise LeaseLost(f"job {job.id} attempt {job.attempt} no longer holds its lease")
        return changed[0].cancel_requested

    async def hand_back(
        self, jobs: Sequence[Job], *, started: bool = True
    ) -> dict[uuid.UUID, JobState]:
        """Return unfinished jobs to the queue (see ``JobQueue.hand_back``)."""
        if not jobs:
            return {}

        def change(now: datetime) -> list[Job]:
            changed = []
            for job in jobs:
                current = self._held(job)
                if current is None:
                    continue
                stop = current.cancel_requested
                changed.append(
                    replace(
                        current,
                        state=JobState.CANCELLED if stop else JobState.QUEUED,
                        finished_at=now if stop else None,
                        error=cancelled_error("its worker stopped first")
                        if stop
                        else current.error,
                        run_at=now,
                        updated_at=now,
                        attempt=current.attempt - (0 if started else 1),
                        lease_owner=None,
                        lease_expires_at=None,
                        message=HANDED_BACK,
                    )
                )
            return changed

        changed = await self._change(change, lambda job: queued(_row(job)))
        if changed:
            self._wake()
        return {job.id: job.state for job in changed}

    async def cancel(self, job_id: uuid.UUID, *, owner_id: str | None = None) -> JobState | None:
        """Cancel a queued job at once, or ask a running one to stop (its worker hears it
        from the notifier). Returns the state after the call, or None when no unfinished
        job with that id (and owner) exists."""

        def change(now: datetime) -> list[Job]:
            current = self._jobs.get(job_id)
            if (
                current is None
                or current.state not in (JobState.QUEUED, JobState.RUNNING)
                or (owner_id is not None and current.owner_id != owner_id)
            ):
                return []
            if current.state is JobState.QUEUED:
                return [
                    replace(
                        current,
                        state=JobState.CANCELLED,
                        finished_at=now,
                        cancel_requested=False,
                        updated_at=now,
                    )
                ]
            return [replace(current, cancel_requested=True, updated_at=now)]

        changed = await self._change(change, lambda job: cancel_outcome(_row(job)))
        if not changed:
            return None
        state = changed[0].state
        if state is JobState.RUNNING:
            for listener in list(self._listeners):
                listener.cancel(job_id)
        return state

    async def reap_expired(self, limit: int = 1000) -> list[Transition]:
        """Requeue (or fail, when out of attempts; or cancel, when its cancel was
        requested) jobs whose lease expired."""

        def change(now: datetime) -> list[Job]:
            expired = sorted(
                (
                    job
                    for job in self._jobs.values()
                    if job.state is JobState.RUNNING
                    and job.lease_expires_at is not None
                    and job.lease_expires_at < now
                ),
                key=lambda job: (job.lease_expires_at, job.id),
            )[:limit]
            changed = []
            for job in expired:
                ended = job.cancel_requested or job.attempt >= job.max_attempts
                if job.cancel_requested:
                    state = JobState.CANCELLED
                    error = cancelled_error("its worker stopped renewing the lease")
                else:
                    state = JobState.FAILED if ended else JobState.QUEUED
                    error = lease_expired_error(job.attempt, job.max_attempts)
                changed.append(
                    replace(
                        job,
                        state=state,
                        finished_at=now if ended else None,
                        run_at=now,
                        updated_at=now,
                        lease_owner=None,
                        lease_expires_at=None,
                        error=error,
                    )
                )
            return changed

        transitions: list[Transition] = []
        changed = await self._change(
            change, lambda job: requeued_or_failed(_row(job)), collect=transitions
        )
        if any(job.state is JobState.QUEUED for job in changed):
            self._wake()
        return transitions

    async def notify_wakeup(self) -> None:
        """Wake every listening worker: claimable jobs may exist."""
        self._wake()

    async def heartbeat(self, held: dict[uuid.UUID, int], lease: float) -> dict[uuid.UUID, bool]:
        """Renew the leases of the held ``{id: attempt}`` that still hold their job; returns
        their cancel flags by id (``sql.HEARTBEAT``)."""

        def change(now: datetime) -> list[Job]:
            return [
                replace(current, lease_expires_at=now + timedelta(seconds=lease))
                for job_id, attempt in held.items()
                if (current := self._jobs.get(job_id)) is not None
                and current.attempt == attempt
                and current.state is JobState.RUNNING
            ]

        renewed = await self._change(change, None)
        return {job.id: job.cancel_requested for job in renewed}

    # -- retention ---------------------------------------------------------------------

    async def maintain(
        self, *, hot_age: float, archive_age: float, limit: int = 5000
    ) -> MaintenanceResult:
        """Move jobs finished more than ``hot_age`` seconds ago to the archive; delete
        archived jobs and idempotency keys older than ``archive_age``."""
        async with self._lock:
            now = self._clock()
            hot_before = now - timedelta(seconds=hot_age)
            old_before = now - timedelta(seconds=archive_age)
            done = sorted(
                (j for j in self._jobs.values() if _finished_before(j, hot_before)),
                key=lambda job: job.finished_at or now,
            )[:limit]
            for job in done:
                del self._jobs[job.id]
                self._archive.setdefault(job.id, job)
            old = [j.id for j in self._archive.values() if _finished_before(j, old_before)]
            for job_id in old[:limit]:
                del self._archive[job_id]
            keys = [key for key, (_, at) in self._keys.items() if at < old_before]
            for key in keys[:limit]:
                del self._keys[key]
        return MaintenanceResult(ran=True, archived=len(done), pruned=len(old[:limit]))

    # -- plumbing ----------------------------------------------------------------------

    def _held(self, job: Job) -> Job | None:
        """The stored job when ``job``'s attempt still holds it (the fence)."""
        current = self._jobs.get(job.id)
        if current is None or current.attempt != job.attempt:
            return None
        return current if current.state is JobState.RUNNING else None

    async def _change(
        self,
        change: Callable[[datetime], list[Job]],
        transition: Callable[[Job], Transition] | None,
        *,
        collect: list[Transition] | None = None,
    ) -> list[Job]:
        """Compute new versions of some jobs under the lock; tell the hooks (their
        ``record`` raising undoes the change), store them, then tell the hooks after."""
        recorded: Any = None
        transitions: list[Transition] = []
        async with self._lock:
            changed = change(self._clock())
            if transition is not None:
                transitions = [transition(job) for job in changed]
            if transitions and self._hooks is not None:
                recorded = await self._hooks.record(None, transitions)
            self._jobs.update((job.id, job) for job in changed)
        if collect is not None:
            collect.extend(transitions)
        if transitions and self._hooks is not None:
            await self._hooks.committed(recorded)
        return changed

    def _wake(self) -> None:
        for listener in list(self._listeners):
            listener.wake()


class _Listener:
    """One running ``InMemoryNotifier``: its callbacks, called soon on its loop (as a
    notification arrives after the statement that sent it)."""

    def __init__(
        self, on_wakeup: Callable[[], None], on_cancel: Callable[[uuid.UUID], None]
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._on_wakeup = on_wakeup
        self._on_cancel = on_cancel

    def wake(self) -> None:
        self._loop.call_soon_threadsafe(self._on_wakeup)

    def cancel(self, job_id: uuid.UUID) -> None:
        self._loop.call_soon_threadsafe(self._on_cancel, job_id)


class InMemoryNotifier:
    """The ``Notifier`` of an ``InMemoryQueue``: connected while it runs."""

    def __init__(self, queue: InMemoryQueue) -> None:
        self._queue = queue
        self._connected = asyncio.Event()

    @property
    def connected(self) -> asyncio.Event:
        return self._connected

    async def run(
        self, on_wakeup: Callable[[], None], on_cancel: Callable[[uuid.UUID], None]
    ) -> None:
        """Deliver the queue's wake-ups and cancel requests until cancelled."""
        listener = _Listener(on_wakeup, on_cancel)
        self._queue._listeners.add(listener)
        self._connected.set()
        on_wakeup()  # as after a (re)connect: hints sent before are lost
        try:
            await asyncio.Event().wait()  # until cancelled
        finally:
            self._connected.clear()
            self._queue._listeners.discard(listener)


class InMemoryLeases:
    """The ``Leases`` of an ``InMemoryQueue``: renews every held lease against the queue's
    clock every third of the lease (real time), and on ``renew()``, which a test calls
    after moving a ``ManualClock``."""

    def __init__(self, queue: InMemoryQueue) -> None:
        self._queue = queue
        self._held: dict[uuid.UUID, int] = {}
        self._lease = 30.0
        self._on_cancel: Callable[[uuid.UUID], None] | None = None
        self._on_lost: Callable[[uuid.UUID], None] | None = None
        self._task: asyncio.Task[None] | None = None
        self.renewals = 0  # renewals that renewed at least one lease

    @property
    def held(self) -> dict[uuid.UUID, int]:
        """The held jobs, ``{id: attempt}``."""
        return dict(self._held)

    def start(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        lease: float,
        on_cancel: Callable[[uuid.UUID], None],
        on_lost: Callable[[uuid.UUID], None],
    ) -> None:
        self._lease = lease
        self._on_cancel = on_cancel
        self._on_lost = on_lost
        self._task = loop.create_task(self._run(), name="mediajobs-memory-leases")

    def hold(self, job: Job) -> None:
        self._held[job.id] = job.attempt

    def release(self, job: Job) -> None:
        if self._held.get(job.id) == job.attempt:
            del self._held[job.id]

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._lease / 3.0)
            await self.renew()

    async def renew(self) -> None:
        """Renew every held lease now; report cancel flags and leases lost."""
        held = dict(self._held)
        if not held:
            return
        still_ours = await self._queue.heartbeat(held, self._lease)
        if still_ours:
            self.renewals += 1
        for job_id, lost in renewal_outcomes(held, self._held, still_ours):
            report = self._on_lost if lost else self._on_cancel
            if report is not None:
                report(job_id)


def _row(job: Job) -> dict[str, Any]:
    """The columns the transition functions read, as the Postgres statements return them."""
    return {
        "id": job.id,
        "owner_id": job.owner_id,
        "kind": job.kind,
        "attempt": job.attempt,
        "state": job.state.value,
        "error": job.error,
    }


def _runnable(job: Job, now: datetime) -> bool:
    return job.state is JobState.QUEUED and job.run_at <= now


def _finished_before(job: Job, moment: datetime) -> bool:
    return job.finished_at is not None and job.finished_at < moment


def _json_copy(value: Any) -> Any:
    """``value`` as JSON would store it (raises ``TypeError`` for what JSON cannot hold)."""
    return json.loads(json.dumps(value, allow_nan=False))


if TYPE_CHECKING:  # the checker proves the double implements the interfaces

    def _implements(queue: InMemoryQueue) -> tuple[QueueBackend, Leases, Notifier]:
        return queue, queue.leases(), queue.notifier()
