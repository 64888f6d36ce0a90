"""The worker runtime: claim jobs, run their handlers, record the outcome.

One ``Worker`` runs up to ``concurrency`` jobs at once on its event loop. Around the claim
loop it keeps: a ``Notifier`` for wake-ups (with a polling fallback), ``Leases`` that keep
the running jobs' leases alive, a completer that writes finished jobs in batches (group
commit), and a housekeeping task that recovers expired leases and moves old jobs to the
archive. The queue, the leases and the notifier come in through the constructor
(``queue.base``); ``Worker.for_postgres`` builds the Postgres ones from a conninfo, and
``InMemoryQueue`` provides in-memory ones for tests.

Kind limits (``WorkerOptions.kind_limits``) cap how many jobs of a kind run at once, so a
backlog of bulk work (``ingest.batch``) cannot take every slot: each claim asks for the
unlimited kinds first, with every free slot, then for each limited kind with what is left
of its allowance. Each of these claim groups rests on its own when the queue has nothing
for it, so a saturated limited kind never holds back the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import psycopg

from mediajobs.config import Settings
from mediajobs.errors import JobCancelled, JobError, JobFailed, LeaseLost, Retry
from mediajobs.logs import quoted
from mediajobs.queue.base import Leases, Notifier, QueueBackend, encode_result
from mediajobs.queue.kinds import INGEST_BATCH, MEDIA_EMBED
from mediajobs.queue.lease import LeaseKeeper
from mediajobs.queue.listener import NotificationListener
from mediajobs.queue.models import Backoff, Job, JobState
from mediajobs.queue.queue import JobQueue
from mediajobs.queue.registry import HandlerRegistry, JobContext
from mediajobs.types import JSON

log = logging.getLogger(__name__)

MAX_CLAIMS = 2  # claim statements in flight per worker

_Attempt = tuple[uuid.UUID, int]  # (job id, attempt)


@dataclass(frozen=True)
class WorkerOptions:
    """How a worker runs. The fields a deployment sets default to ``Settings`` (their one
    home); ``from_settings`` is how the worker's composition root builds them."""

    concurrency: int = Settings.worker_concurrency  # jobs at once
    lease: float = Settings.lease_seconds  # seconds; renewed every lease/3 while the job runs
    poll_interval: float = Settings.poll_interval  # fallback when no notification arrives
    shutdown_grace: float = Settings.shutdown_grace  # running jobs get this long on SIGTERM
    kinds: Sequence[str] | None = None  # None: every kind the registry handles
    burst: bool = False  # stop once nothing is runnable and nothing runs
    maintenance_interval: float = 60.0
    hot_age: float = Settings.job_retention_hot  # finished jobs move to the archive at this age
    archive_age: float = Settings.job_retention  # archived jobs and keys are deleted at this age
    progress_interval: float = Settings.progress_interval  # progress written at most this often
    # Kind -> the most jobs of that kind this worker runs at once (each at least 1); the
    # other kinds fill the remaining slots. Empty: only ``concurrency`` bounds any kind.
    # ``from_settings`` limits ``ingest.batch`` to ``ingest_concurrency``.
    kind_limits: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    name: str = field(
        default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    )

    def __post_init__(self) -> None:
        """Raises ``ValueError`` for a kind limit below 1. Keeps a read-only copy of
        ``kind_limits`` (the caller's dict may change; the options may not), each limit at
        most ``concurrency - 1`` (and at least 1): a limited kind never takes the last slot,
        so other kinds (uploads, next to ingest batches) always find one free."""
        for kind, limit in self.kind_limits.items():
            if limit < 1:
                raise ValueError(f"kind_limits[{kind!r}] must be at least 1, not {limit}")
        ceiling = max(1, self.concurrency - 1)
        limits = {kind: min(limit, ceiling) for kind, limit in self.kind_limits.items()}
        object.__setattr__(self, "kind_limits", MappingProxyType(limits))

    @classmethod
    def from_settings(
        cls, settings: Settings, *, kinds: Sequence[str] | None = None, burst: bool = False
    ) -> WorkerOptions:
        """The options ``settings`` name, for the job ``kinds`` given (None: all)."""
        return cls(
            concurrency=settings.worker_concurrency,
            lease=settings.lease_seconds,
            poll_interval=settings.poll_interval,
            shutdown_grace=settings.shutdown_grace,
            kinds=kinds,
            burst=burst,
            hot_age=settings.job_retention_hot,
            archive_age=settings.job_retention,
            progress_interval=settings.progress_interval,
            # media.embed: one batch goes through the model at a time (a lock in the
            # handler); a second job reads its variants and writes its rows meanwhile, so
            # Postgres's share (the HNSW inserts) overlaps the model's. More would only hold
            # slots that uploads could use.
            kind_limits={INGEST_BATCH: settings.ingest_concurrency, MEDIA_EMBED: 2},
        )


@dataclass
class WorkerStats:
    claimed: int = 0
    succeeded: int = 0
    retried: int = 0
    failed: int = 0
    cancelled: int = 0
    lost: int = 0  # finished after losing the lease: the outcome was refused
    handed_back: int = 0
    recovered: int = 0  # expired leases of other (dead) workers put back in the queue


class _ClaimGroup:
    """Kinds one claim statement asks for: the unlimited kinds together (``limit`` None), or
    one limited kind. A group whose last claim came back short rests until
    ``resting_until`` (loop time), or until a wake-up notification newer than that claim's
    start; the other groups go on being claimed meanwhile."""

    def __init__(self, kinds: list[str], limit: int | None) -> None:
        self.kinds = kinds
        self.limit = limit  # jobs of this kind running at once; None: no limit of its own
        self.reserved = 0  # room that claims in flight may fill
        self.resting_until: float | None = None
        self.resting_hints = 0

    def wake(self, now: float, hints: int) -> None:
        """End the rest once its time is up or a newer notification came."""
        if self.resting_until is not None and (
            now >= self.resting_until or hints != self.resting_hints
        ):
            self.resting_until = None


class Worker:
    """Runs jobs from ``queue`` with the handlers in ``registry``; ``leases`` keeps the
    leases of its running jobs alive and ``notifier`` wakes its claim loop (see the module
    docstring)."""

    def __init__(
        self,
        queue: QueueBackend,
        registry: HandlerRegistry,
        *,
        leases: Leases,
        notifier: Notifier,
        options: WorkerOptions | None = None,
        backoff: Backoff | None = None,
        maintenance: Sequence[Callable[[], Awaitable[object]]] = (),
    ) -> None:
        self.options = options or WorkerOptions()
        self.name = self.options.name
        self.stats = WorkerStats()
        self._queue = queue
        self._registry = registry
        self._backoff = backoff or Backoff()
        self._maintenance = list(maintenance)  # run with the queue's maintenance sweep
        self._kinds = registry.select(self.options.kinds)
        # Attempts holding a concurrency slot (their handler runs) ...
        self._active: dict[_Attempt, tuple[asyncio.Task[None], JobContext[QueueBackend]]] = {}
        # ... and every attempt not yet finished, its completion write included. Keyed by
        # attempt: after losing a lease, this worker may claim the job again while the
        # stale attempt still runs.
        self._tasks: dict[_Attempt, tuple[asyncio.Task[None], JobContext[QueueBackend]]] = {}
        # Set on anything the claim loop may act on: a freed slot, a finished claim, a
        # wake-up notification, stop().
        self._changed = asyncio.Event()
        self._hints = 0  # wake-up notifications received: claimable jobs may exist
        self._claims: set[asyncio.Task[None]] = set()  # claim statements in flight
        self._reserved = 0  # slots those claims may fill
        self._unstarted: list[Job] = []  # claimed after stop(): handed straight back
        self._stopping = asyncio.Event()
        self._force = asyncio.Event()  # a second stop(): skip (or end) the grace period
        self._completer = _Completer(queue)
        self._leases = leases
        self._notifier = notifier

    @classmethod
    def for_postgres(
        cls,
        queue: JobQueue,
        registry: HandlerRegistry,
        *,
        conninfo: str,
        options: WorkerOptions | None = None,
        backoff: Backoff | None = None,
        maintenance: Sequence[Callable[[], Awaitable[object]]] = (),
    ) -> Worker:
        """A worker on Postgres: a ``LeaseKeeper`` thread and a ``NotificationListener``,
        each with its own connection to ``conninfo``."""
        return cls(
            queue,
            registry,
            leases=LeaseKeeper(conninfo),
            notifier=NotificationListener(conninfo),
            options=options,
            backoff=backoff,
            maintenance=maintenance,
        )

    @property
    def kinds(self) -> list[str]:
        return list(self._kinds)

    @property
    def notifier(self) -> Notifier:
        return self._notifier

    @property
    def running(self) -> int:
        return len(self._active)

    @property
    def stopping(self) -> bool:
        """``stop()`` was called."""
        return self._stopping.is_set()

    def stop(self) -> None:
        """Stop claiming; running jobs get the grace period. A second call skips it."""
        if self._stopping.is_set():
            self._force.set()
        self._stopping.set()
        self._changed.set()

    async def run(self) -> WorkerStats:
        """Run until ``stop()`` (or, in burst mode, until the queue is drained)."""
        loop = asyncio.get_running_loop()
        listener = asyncio.create_task(
            self._notifier.run(self._woken, self._cancel_requested), name="mediajobs-listener"
        )
        completer = asyncio.create_task(self._completer.run(), name="mediajobs-completer")
        housekeeping = asyncio.create_task(self._housekeeping(), name="mediajobs-housekeeping")
        self._leases.start(
            loop,
            lease=self.options.lease,
            on_cancel=self._cancel_requested,
            on_lost=self._lease_lost,
        )
        log.info(
            "worker %s started: kinds=%s concurrency=%d kind_limits=%s",
            self.name,
            self._kinds,
            self.options.concurrency,
            dict(self.options.kind_limits),
        )
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._notifier.connected.wait(), timeout=5.0)
            await self._claim_loop()
        finally:
            await self._shut_down()
            housekeeping.cancel()
            listener.cancel()
            await self._completer.close()
            await asyncio.gather(housekeeping, listener, completer, return_exceptions=True)
            await self._leases.stop()
            log.info("worker %s stopped: %s", self.name, self.stats)
        return self.stats

    # -- the claim loop ----------------------------------------------------------------

    def _claim_groups(self) -> list[_ClaimGroup]:
        """The unlimited kinds as one group (first), then one group per limited kind this
        worker handles, in ``kind_limits`` order."""
        limits = self.options.kind_limits
        unlimited = [kind for kind in self._kinds if kind not in limits]
        limited = [
            _ClaimGroup([kind], limit) for kind, limit in limits.items() if kind in self._kinds
        ]
        # Every kind the worker handles is in one group: unlimited empty means limited not.
        return [_ClaimGroup(unlimited, None), *limited] if unlimited else limited

    def _running_of(self, kind: str) -> int:
        return sum(1 for _, ctx in self._active.values() if ctx.job.kind == kind)

    def _capacity(self, group: _ClaimGroup, free: int) -> int:
        """Jobs a claim may take for ``group`` now, given ``free`` unreserved slots."""
        if group.limit is None:
            return free
        allowance = group.limit - self._running_of(group.kinds[0]) - group.reserved
        return max(0, min(free, allowance))

    async def _claim_loop(self) -> None:
        """Keep the slots full. Up to MAX_CLAIMS claims are in flight at once, so the next
        batch is on its way while the current one runs; the second claim waits until a
        quarter of the slots are free, to keep batches large. A claim asks each group that
        has room and is not resting (``_ClaimGroup``)."""
        options = self.options
        loop = asyncio.get_running_loop()
        floor = max(1, options.concurrency // 4)
        groups = self._claim_groups()
        while not self._stopping.is_set():
            self._changed.clear()
            now = loop.time()
            for group in groups:
                group.wake(now, self._hints)
            free = options.concurrency - len(self._active) - self._reserved
            wanted = [
                (group, room)
                for group in groups
                if group.resting_until is None and (room := self._capacity(group, free)) > 0
            ]
            if wanted and (not self._claims or (len(self._claims) < MAX_CLAIMS and free >= floor)):
                self._reserved += free
                for group, room in wanted:
                    group.reserved += room
                task = asyncio.create_task(self._claim(free, wanted), name="mediajobs-claim")
                self._claims.add(task)  # removed by _claim itself, before it wakes the loop
                continue
            resting = [g.resting_until for g in groups if g.resting_until is not None]
            if options.burst and len(resting) == len(groups) and not (self._claims or self._tasks):
                return
            timeout = min(resting) - now if resting else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout)
        if self._claims:
            await asyncio.gather(*self._claims, return_exceptions=True)

    async def _claim(self, free: int, wanted: list[tuple[_ClaimGroup, int]]) -> None:
        """Claim for each of ``wanted`` (group, room) in turn, one statement each, within
        the ``free`` slots reserved; start each group's jobs as soon as they arrive."""
        options = self.options
        hints = self._hints
        unreserved = free  # of the reservation, not yet returned
        asked = 0  # groups whose room has been returned
        try:
            for group, room in wanted:
                limit = min(room, unreserved)
                if limit <= 0 or self._stopping.is_set():
                    break  # the slots are full (or stop() came): the rest do not rest
                jobs: list[Job] = []
                try:
                    jobs = await self._queue.claim(
                        self.name, limit, lease=options.lease, kinds=group.kinds
                    )
                except psycopg.Error as exc:
                    log.warning("claim failed (%s); retrying", exc)
                except Exception:
                    log.exception("claim failed; retrying")
                if len(jobs) < limit:
                    # Nothing more for this group now: it rests until the poll interval, or
                    # until a notification newer than this claim's start (one that came
                    # while the claim ran may announce a job its snapshot missed: the loop
                    # then claims again at once).
                    group.resting_until = asyncio.get_running_loop().time() + options.poll_interval
                    group.resting_hints = hints
                else:
                    group.resting_until = None
                # The group's jobs take their slots now; the room it was given is released.
                group.reserved -= room
                asked += 1
                unreserved -= len(jobs)
                self._reserved -= len(jobs)
                if self._stopping.is_set():
                    self._unstarted.extend(jobs)
                else:
                    for job in jobs:
                        self._start(job)
        finally:
            for group, room in wanted[asked:]:
                group.reserved -= room
            self._claims.discard(asyncio.current_task())
            self._reserved -= unreserved
            self._changed.set()

    def _woken(self) -> None:
        self._hints += 1
        self._changed.set()

    def _attempts(self, job_id: uuid.UUID) -> list[JobContext[QueueBackend]]:
        return [ctx for (held, _), (_, ctx) in self._tasks.items() if held == job_id]

    def _cancel_requested(self, job_id: uuid.UUID) -> None:
        for ctx in self._attempts(job_id):
            ctx.request_cancel()

    def _lease_lost(self, job_id: uuid.UUID) -> None:
        for ctx in self._attempts(job_id):
            log.warning("job %s lost its lease; its outcome will be refused", job_id)
            ctx.mark_lease_lost()

    # -- running one job ---------------------------------------------------------------

    def _start(self, job: Job) -> None:
        self.stats.claimed += 1
        ctx = JobContext(
            job,
            queue=self._queue,
            worker_name=self.name,
            progress_interval=self.options.progress_interval,
        )
        for stale in self._attempts(job.id):  # a new attempt fences out the old ones
            stale.mark_lease_lost()
        self._leases.hold(job)
        task = asyncio.create_task(self._execute(ctx))
        self._active[(job.id, job.attempt)] = (task, ctx)
        self._tasks[(job.id, job.attempt)] = (task, ctx)

    async def _execute(self, ctx: JobContext[QueueBackend]) -> None:
        job = ctx.job
        try:
            await self._outcome(ctx)
        finally:
            self._leases.release(job)
            self._tasks.pop((job.id, job.attempt), None)
            self._free_slot(job)

    def _free_slot(self, job: Job) -> None:
        if self._active.pop((job.id, job.attempt), None) is not None:
            self._changed.set()

    async def _outcome(self, ctx: JobContext[QueueBackend]) -> None:
        job = ctx.job
        handler = self._registry.get(job.kind)
        try:
            try:
                if handler is None:
                    raise JobFailed(f"no handler for kind {job.kind!r}", code="unknown_kind")
                if ctx.cancel_requested:
                    raise JobCancelled("cancelled before it started")
                result = await handler(ctx, job)
                await ctx.flush_progress()  # the last report goes out before the completion
            except BaseException:
                ctx.discard_progress()
                raise
        except JobCancelled:
            if await self._queue.mark_cancelled(job):
                self.stats.cancelled += 1
                log.info("job cancelled: kind=%s job=%s (its handler stopped)", job.kind, job.id)
            return
        except LeaseLost:
            self.stats.lost += 1
            return
        except JobError as exc:
            await self._fail(ctx, exc)
            return
        except Exception as exc:
            log.exception("job raised: %s", describe_job(ctx))
            await self._fail(ctx, Retry(f"{type(exc).__name__}: {exc}", code="internal_error"))
            return
        try:
            encoded = encode_result(result)  # a result that cannot be stored fails its job
        except (TypeError, ValueError) as exc:
            await self._fail(ctx, JobFailed(f"result is not JSON: {exc}", code="invalid_result"))
            return
        # The slot is free once the handler returned: the next claim overlaps this job's
        # completion write. The lease stays held until that write commits.
        self._free_slot(job)
        if await self._completer.submit(job, result, encoded):
            self.stats.succeeded += 1
        else:
            self.stats.lost += 1

    async def _fail(self, ctx: JobContext[QueueBackend], error: JobError) -> None:
        # A job whose cancel was requested ends cancelled, whatever the error: the queue
        # decides from the flag in the row (this worker may not have heard of it yet).
        job = ctx.job
        delay = self._backoff.delay(job.attempt)
        if isinstance(error, Retry) and error.delay is not None:
            delay = error.delay
        state = await self._queue.fail(job, error, delay=delay)
        if state is JobState.QUEUED:
            self.stats.retried += 1
        elif state is JobState.FAILED:
            self.stats.failed += 1
        elif state is JobState.CANCELLED:
            self.stats.cancelled += 1
        else:
            self.stats.lost += 1
        if state is not None:
            log.log(
                outcome_level(state, error), "%s", describe_outcome(ctx, state, error, delay=delay)
            )

    # -- housekeeping and shutdown -----------------------------------------------------

    async def _housekeeping(self) -> None:
        """Recover expired leases, and now and then run the maintenance sweep. A failure
        of one step is logged and the loop goes on: whatever breaks, this worker keeps
        reaping the leases of dead workers."""
        reap_every = max(0.25, min(self.options.lease / 4.0, 5.0))
        since_maintenance = 0.0
        while True:
            await asyncio.sleep(reap_every)
            since_maintenance += reap_every
            with _logged("recovering expired leases"):
                recovered = await self._queue.reap_expired()
                self.stats.recovered += sum(t.state is JobState.QUEUED for t in recovered)
            if since_maintenance >= self.options.maintenance_interval:
                since_maintenance = 0.0
                with _logged("archiving finished jobs"):
                    await self._queue.maintain(
                        hot_age=self.options.hot_age, archive_age=self.options.archive_age
                    )
                for task in self._maintenance:
                    with _logged(f"maintenance task {getattr(task, '__name__', task)!s}"):
                        await task()

    async def _shut_down(self) -> None:
        if self._unstarted:
            handed = self._count_handed_back(
                await self._queue.hand_back(self._unstarted, started=False)
            )
            log.info("handed %d jobs claimed during stop back to the queue", handed)
            self._unstarted = []
        if not self._tasks:
            return
        tasks = [task for task, _ in self._tasks.values()]
        if not self._force.is_set() and self.options.shutdown_grace > 0:
            log.info(
                "waiting up to %.1fs for %d running jobs", self.options.shutdown_grace, len(tasks)
            )
            # Until they finish, the grace period ends, or a second stop() (Ctrl-C twice).
            finished = asyncio.ensure_future(asyncio.wait(tasks))
            forced = asyncio.ensure_future(self._force.wait())
            await asyncio.wait(
                [finished, forced],
                timeout=self.options.shutdown_grace,
                return_when=asyncio.FIRST_COMPLETED,
            )
            finished.cancel()  # stops the waiting only; the jobs are handled below
            forced.cancel()
        unfinished = [(task, ctx) for task, ctx in self._tasks.values() if not task.done()]
        for task, _ in unfinished:
            task.cancel()
        await asyncio.gather(*(task for task, _ in unfinished), return_exceptions=True)
        if unfinished:
            handed = self._count_handed_back(
                await self._queue.hand_back([ctx.job for _, ctx in unfinished])
            )
            log.info("handed %d unfinished jobs back to the queue", handed)

    def _count_handed_back(self, states: dict[uuid.UUID, JobState]) -> int:
        """Count a hand-back's outcome: requeued jobs, and those whose cancel was requested
        (they ended cancelled). Returns how many went back to the queue."""
        requeued = sum(state is JobState.QUEUED for state in states.values())
        self.stats.handed_back += requeued
        self.stats.cancelled += len(states) - requeued
        return requeued


@contextlib.contextmanager
def _logged(step: str) -> Iterator[None]:
    """Log a failure of a housekeeping ``step`` and carry on: a database error in one line
    (it comes and goes with Postgres), anything else with its traceback (a bug)."""
    try:
        yield
    except psycopg.Error as exc:
        log.warning("housekeeping: %s failed (%s); retrying", step, exc)
    except Exception:
        log.exception("housekeeping: %s failed; retrying", step)


# JobFailed codes the worker itself raises: a deployment's fault (no handler for the kind, a
# handler returning what cannot be stored), not the job's input.
WORKER_FAILURE_CODES = frozenset({"unknown_kind", "invalid_result"})


def outcome_level(state: JobState, error: JobError) -> int:
    """The level of a failed attempt's log line: ERROR when the job failed for good for an
    internal reason (retries exhausted, an exception, a worker's fault); WARNING when it
    will be retried or ended cancelled, or when a handler refused the job's input with
    JobFailed (a too small, corrupt or unsupported upload is its owner's, not the service's:
    ``code`` says which)."""
    if state is not JobState.FAILED:
        return logging.WARNING
    if isinstance(error, JobFailed) and error.code not in WORKER_FAILURE_CODES:
        return logging.WARNING
    return logging.ERROR


def describe_outcome(
    ctx: JobContext[Any], state: JobState, error: JobError, *, delay: float
) -> str:
    """One log line about a failed attempt: ``job failed: kind=media.process job=<id>
    attempt=1/3 mediaId=<id> fileName="a.png" code=corrupt_image message="..."``. What the
    handler named with ``ctx.describe`` comes after the attempt; text values are JSON-quoted
    (a file name cannot forge a line)."""
    verdict = {
        JobState.FAILED: "job failed",
        JobState.QUEUED: f"job attempt failed, retrying in {delay:.1f}s",
        JobState.CANCELLED: "job cancelled",
    }.get(state, f"job {state}")
    details = f"code={quoted(error.code)} message={quoted(str(error))}"
    return f"{verdict}: {describe_job(ctx)} {details}"


def describe_job(ctx: JobContext[Any]) -> str:
    """``kind=... job=... attempt=n/max`` and what the handler named with ``ctx.describe``."""
    job = ctx.job
    fields = [
        f"kind={job.kind}",
        f"job={job.id}",
        f"attempt={job.attempt}/{job.max_attempts}",
        *(f"{key}={quoted(value)}" for key, value in ctx.log_fields.items()),
    ]
    return " ".join(fields)


class _Completer:
    """Group commit for successful jobs: whatever finished while the previous write was in
    flight goes into the next single UPDATE."""

    MAX_BATCH = 1000

    def __init__(self, queue: QueueBackend) -> None:
        self._queue = queue
        self._pending: list[tuple[Job, JSON, str | None, asyncio.Future[bool]]] = []
        self._ready = asyncio.Event()
        self._closing = False

    async def submit(self, job: Job, result: JSON, encoded: str | None) -> bool:
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append((job, result, encoded, future))
        self._ready.set()
        return await future

    async def close(self) -> None:
        self._closing = True
        self._ready.set()

    async def run(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._pending:
                batch = self._pending[: self.MAX_BATCH]
                del self._pending[: self.MAX_BATCH]
                await self._write(batch)
            if self._closing:
                return

    async def _write(self, batch: list[tuple[Job, JSON, str | None, asyncio.Future[bool]]]) -> None:
        delay = 0.05
        for attempt in range(6):
            try:
                accepted = await self._queue.complete_encoded(
                    [(job, result, encoded) for job, result, encoded, _ in batch]
                )
                break
            except psycopg.Error as exc:
                # The leases are still renewed while we retry; if Postgres stays away, the
                # jobs run again after their leases expire (never lost, maybe repeated).
                log.warning("completing %d jobs failed (%s), try %d", len(batch), exc, attempt)
                await asyncio.sleep(delay)
                delay = min(2.0, delay * 2)
        else:
            accepted = set()
        for job, _, _, future in batch:
            if not future.done():
                future.set_result(job.id in accepted)
