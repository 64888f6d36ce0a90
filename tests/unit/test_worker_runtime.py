"""The Worker over InMemoryQueue: the claim loop, group commit, retries with backoff, cancel,
shutdown and lease loss, with no Postgres. Time that matters to the queue (run_at, leases)
moves on a ManualClock; the tests wait on conditions, with deadlines, never for a fixed time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from mediajobs.errors import JobFailed, Retry
from mediajobs.queue import (
    Backoff,
    HandlerRegistry,
    InMemoryLeases,
    InMemoryQueue,
    Job,
    JobContext,
    JobSpec,
    JobState,
    ManualClock,
    Worker,
    WorkerOptions,
)
from mediajobs.types import JSON
from tests.support.workers import wait_for

pytestmark = pytest.mark.timeout(30)

DEADLINE = 10.0  # seconds a condition may take on a loaded machine


def make_worker(
    queue: InMemoryQueue,
    registry: HandlerRegistry,
    *,
    leases: InMemoryLeases | None = None,
    backoff: Backoff | None = None,
    **options: Any,
) -> Worker:
    """A worker on ``queue`` that polls only once an hour: it claims when woken."""
    return Worker(
        queue,
        registry,
        leases=leases or queue.leases(),
        notifier=queue.notifier(),
        options=WorkerOptions(**{"poll_interval": 3600.0, **options}),
        backoff=backoff,
    )


@contextlib.asynccontextmanager
async def running(worker: Worker) -> AsyncIterator[asyncio.Task[Any]]:
    """The worker runs on this loop until the block ends (then it is stopped)."""
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(worker.notifier.connected.wait(), DEADLINE)
    try:
        yield task
    finally:
        if not task.done():
            worker.stop()
            worker.stop()  # no grace period: the test is over
        await asyncio.wait_for(task, DEADLINE)


async def state_of(queue: InMemoryQueue, job_id: Any) -> Job:
    job = await queue.get(job_id)
    assert job is not None
    return job


async def test_the_claim_loop_runs_every_job_once_within_its_concurrency():
    queue = InMemoryQueue(clock=ManualClock())
    registry = HandlerRegistry()
    active = 0
    most = 0
    runs: list[int] = []

    @registry.handler("work")
    async def work(ctx: JobContext[InMemoryQueue], job: Job) -> JSON:
        nonlocal active, most
        active += 1
        most = max(most, active)
        for _ in range(3):
            await asyncio.sleep(0)  # let the others interleave
        active -= 1
        runs.append(int(job.payload["i"]))  # type: ignore[arg-type]
        return {"double": 2 * int(job.payload["i"])}  # type: ignore[arg-type]

    ids = await queue.enqueue_many(JobSpec("work", "u", {"i": i}) for i in range(50))
    other = await queue.enqueue(JobSpec("not-mine", "u"))
    worker = make_worker(queue, registry, concurrency=4, burst=True)
    stats = await asyncio.wait_for(worker.run(), DEADLINE)

    assert sorted(runs) == list(range(50))
    assert 1 < most <= 4
    assert (stats.claimed, stats.succeeded, stats.failed, stats.lost) == (50, 50, 0, 0)
    for i, job_id in enumerate(ids):
        job = await state_of(queue, job_id)
        assert (job.state, job.result, job.attempt) == (JobState.SUCCEEDED, {"double": 2 * i}, 1)
    assert (await state_of(queue, other.id)).state is JobState.QUEUED  # no handler here


async def test_a_resting_worker_is_woken_by_a_new_job_not_by_polling():
    queue = InMemoryQueue(clock=ManualClock())
    registry = HandlerRegistry()

    @registry.handler("ping")
    async def ping(ctx: JobContext[InMemoryQueue], job: Job) -> JSON:
        return "pong"

    worker = make_worker(queue, registry)  # polls once an hour
    async with running(worker):
        await wait_for(lambda: worker.stats.claimed == 0 and not worker.running, DEADLINE)
        job = await queue.enqueue(JobSpec("ping", "u"))
        await wait_for(lambda: worker.stats.succeeded == 1, DEADLINE)
    assert (await state_of(queue, job.id)).result == "pong"


class GatedCompletions(InMemoryQueue):
    """Holds the first completion write until ``gate`` opens; keeps each write's size."""

    def __init__(self) -> None:
        super().__init__(clock=ManualClock())
        self.writes: list[int] = []
        self.writing = asyncio.Event()
        self.gate = asyncio.Event()

    async def complete_encoded(self, done: Sequence[tuple[Job, JSON, str | None]]) -> set[Any]:
        self.writes.append(len(done))
        self.writing.set()
        await self.gate.wait()
        return await super().complete_encoded(done)


async def test_jobs_that_finish_during_a_completion_write_commit_together_in_the_next():
    queue = GatedCompletions()
    registry = HandlerRegistry()
    release = asyncio.Event()
    returned = 0

    @registry.handler("work")
    async def work(ctx: JobContext[InMemoryQueue], job: Job) -> JSON:
        nonlocal returned
        if job.payload["i"] != 0:
            await release.wait()
        returned += 1
        return job.payload["i"]

    ids = await queue.enqueue_many(JobSpec("work", "u", {"i": i}) for i in range(10))
    worker = make_worker(queue, registry, concurrency=10)
    async with running(worker):
        await asyncio.wait_for(queue.writing.wait(), DEADLINE)  # job 0's write is in flight
        release.set()
        # Every handler returned and freed its slot: the nine wait for the next write.
        await wait_for(lambda: returned == 10 and worker.running == 0, DEADLINE)
        assert queue.writes == [1]
        queue.gate.set()
        await wait_for(lambda: worker.stats.succeeded == 10, DEADLINE)
    assert queue.writes == [1, 9]
    assert [(await state_of(queue, job_id)).result for job_id in ids] == list(range(10))


async def test_failed_attempts_are_retried_after_the_backoff_or_the_delay_the_handler_asks():
    clock = ManualClock()
    queue = InMemoryQueue(clock=clock)
    registry = HandlerRegistry()
    attempts: list[int] = []

    @registry.handler("flaky")
    async def flaky(ctx: JobContext[InMemoryQueue], job: Job) -> JSON:
        attempts.append(job.attempt)
        if job.attempt == 1:
            raise RuntimeError("connection reset")  # a bug or an outage: retried
        if job.attempt == 2:
            raise Retry("rate limited", code="upstream_busy", delay=5)
        return "third time lucky"

    @registry.handler("broken")
    async def broken(ctx: JobContext[InMemoryQueue], job: Job) -> JSON:
        raise JobFailed("not an image", code="corrupt_image")

    backoff = Backoff(base=10, cap=600, jitter=0)
    worker = make_worker(queue, registry, backoff=backoff)
    async with running(worker):
        job = await queue.enqueue(JobSpec("flaky", "u", max_attempts=3))
        bad = await queue.enqueue(JobSpec("broken", "u", max_attempts=3))

        await wait_for(lambda: worker.stats.retried == 1 and worker.stats.failed == 1, DEADLINE)
        first = await state_of(queue, job.id)
        assert (first.state, first.attempt) == (JobState.QUEUED, 1)
        assert (first.run_at - first.updated_at).total_seconds() == pytest.approx(10)
        assert first.error == {
            "code": "internal_error",
            "message": "RuntimeError: connection reset",
            "retryable": True,
        }
        failed = await state_of(queue, bad.id)
        assert (failed.state, failed.attempt) == (JobState.FAILED, 1)

        clock.advance(10)
        await queue.notify_wakeup()
        await wait_for(lambda: worker.stats.retried == 2, DEADLINE)
        second = await state_of(queue, job.id)
        assert (second.run_at - second.updated_at).total_seconds() == pytest.approx(5)
        assert second.error is not None and second.error["code"] == "upstream_busy"

        clock.advance(5)
        await queue.notify_wakeup()
        await wait_for(lambda: worker.stats.succeeded == 1, DEADLINE)
    done = await state_of(queue, job.id)
    assert (done.state, done.attempt, done.result) == (JobState.SUCCEEDED, 3, "third time lucky")
    assert attempts == [1, 2, 3]


async def test_a_result_json_cannot_hold_fails_its_job():
    queue = InMemoryQueue(clock=ManualClock())
    registry = HandlerRegistry()

    @registry.handler("odd")
    async def odd(ctx: JobContext[InMemoryQueue], job: Job) -> JSON:
        return {"when": object()}  # type: ignore[dict-item]

    job = await queue.enqueue(JobSpec("odd", "u"))
    stats = await asyncio.wait_for(make_worker(queue, registry, burst=True).run(), DEADLINE)
    stored = await state_of(queue, job.id)
    assert (stats.failed, stored.state) == (1, JobState.FAILED)
    assert stored.error is not None and stored.error["code"] == "invalid_result"


async def test_a_cancelled_queued_job_never_runs():
    queue = InMemoryQueue(clock=ManualClock())
    registry = HandlerRegistry()
    ran: list[str] = []
    started = asyncio.Event()
    release = asyncio.Event()

    @registry.handler("work")
    async def work(ctx: JobContext[InMemoryQueue], job: Job) -> JSON:
        ran.append(str(job.payload["name"]))
        started.set()
        await release.wait()
        return None

    first = await queue.enqueue(JobSpec("work", "u", {"name": "first"}))
    second = await queue.enqueue(JobSpec("work", "u", {"name": "second"}))
    run = asyncio.create_task(make_worker(queue, registry, concurrency=1, burst=True).run())
    await asyncio.wait_for(started.wait(), DEADLINE)
    assert await queue.cancel(second.id) is JobState.CANCELLED
    release.set()
    stats = await asyncio.wait_for(run, DEADLINE)
    assert ran == ["first"]
    assert (stats.claimed, stats.succeeded) == (1, 1)
    assert (await state_of(queue, first.id)).state is JobState.SUCCEEDED
    assert (await state_of(queue, second.id)).state is JobState.CANCELLED


async def test_a_running_job_asked_to_stop_ends_cancelled_when_its_handler_stops():
    queue = InMemoryQueue(clock=ManualClock())
    registry = HandlerRegistry()
    started = asyncio.Event()

    @registry.handler("long")
    async def long(ctx: JobContext[InMemoryQueue], job: Job) -> JSON:
        started.set()
        while True:  # a cooperative handler: it checks between steps
            ctx.raise_if_cancelled()
            await asyncio.sleep(0.005)

    worker = make_worker(queue, registry)
    async with running(worker):
        job = await queue.enqueue(JobSpec("long", "u"))
        await asyncio.wait_for(started.wait(), DEADLINE)
        assert await queue.cancel(job.id) is JobState.RUNNING  # heard through the notifier
        await wait_for(lambda: worker.stats.cancelled == 1, DEADLINE)
    stored = await state_of(queue, job.id)
    assert stored.state is JobState.CANCELLED
    assert stored.error is not None
    assert stored.error["message"] == "cancelled while running; the handler stopped"


async def test_a_stop_gives_running_jobs_the_grace_period_to_finish():
    queue = InMemoryQueue(clock=ManualClock())
    registry = HandlerRegistry()
    started = asyncio.Event()
    release = asyncio.Event()

    @registry.handler("work")
    async def work(ctx: JobContext[InMemoryQueue], job: Job) -> JSON:
        started.set()
        await release.wait()
        return "finished in grace"

    worker = make_worker(queue, registry, shutdown_grace=3600)
    job = await queue.enqueue(JobSpec("work", "u"))
    run = asyncio.create_task(worker.run())
    await asyncio.wait_for(started.wait(), DEADLINE)
    worker.stop()
    assert worker.stopping
    late = await queue.enqueue(JobSpec("work", "u"))  # not claimed once stopping
    release.set()
    stats = await asyncio.wait_for(run, DEADLINE)
    assert (stats.succeeded, stats.handed_back, stats.claimed) == (1, 0, 1)
    assert (await state_of(queue, job.id)).result == "finished in grace"
    assert (await state_of(queue, late.id)).state is JobState.QUEUED


async def test_jobs_still_running_after_the_grace_period_are_handed_back():
    queue = InMemoryQueue(clock=ManualClock())
    registry = HandlerRegistry()
    started: list[str] = []

    @registry.handler("stuck")
    async def stuck(ctx: JobContext[InMemoryQueue], job: Job) -> JSON:
        started.append(str(job.payload["name"]))
        await asyncio.Event().wait()  # never finishes by itself
        return None

    plain = await queue.enqueue(JobSpec("stuck", "u", {"name": "plain"}))
    flagged = await queue.enqueue(JobSpec("stuck", "u", {"name": "flagged"}))
    worker = make_worker(queue, registry, shutdown_grace=3600)
    run = asyncio.create_task(worker.run())
    await wait_for(lambda: len(started) == 2, DEADLINE)
    assert await queue.cancel(flagged.id) is JobState.RUNNING  # the handler ignores it
    worker.stop()
    worker.stop()  # a second stop ends the grace period at once
    stats = await asyncio.wait_for(run, DEADLINE)
    assert (stats.handed_back, stats.cancelled, stats.succeeded) == (1, 1, 0)
    back = await state_of(queue, plain.id)
    assert (back.state, back.attempt, back.message) == (
        JobState.QUEUED,
        1,
        "handed back by a stopping worker",
    )
    assert (await state_of(queue, flagged.id)).state is JobState.CANCELLED


class GatedClaims(InMemoryQueue):
    """A claim that comes back only when ``gate`` opens."""

    def __init__(self) -> None:
        super().__init__(clock=ManualClock())
        self.claiming = asyncio.Event()
        self.gate = asyncio.Event()

    async def claim(self, *args: Any, **kwargs: Any) -> list[Job]:
        jobs = await super().claim(*args, **kwargs)
        self.claiming.set()
        await self.gate.wait()
        return jobs


async def test_jobs_a_claim_returns_after_stop_are_handed_back_unstarted():
    queue = GatedClaims()
    registry = HandlerRegistry()
    ran: list[Job] = []

    @registry.handler("work")
    async def work(ctx: JobContext[InMemoryQueue], job: Job) -> JSON:
        ran.append(job)
        return None

    ids = await queue.enqueue_many([JobSpec("work", "u")] * 5)
    worker = make_worker(queue, registry)
    run = asyncio.create_task(worker.run())
    await asyncio.wait_for(queue.claiming.wait(), DEADLINE)
    worker.stop()
    queue.gate.set()
    stats = await asyncio.wait_for(run, DEADLINE)
    assert ran == []
    assert (stats.handed_back, stats.claimed, stats.succeeded) == (5, 0, 0)
    for job_id in ids:
        job = await state_of(queue, job_id)
        assert (job.state, job.attempt) == (JobState.QUEUED, 0)


async def test_an_attempt_that_lost_its_lease_has_its_outcome_refused():
    clock = ManualClock()
    queue = InMemoryQueue(clock=clock)
    registry = HandlerRegistry()
    contexts: list[JobContext[InMemoryQueue]] = []
    proceed = asyncio.Event()

    @registry.handler("slow")
    async def slow(ctx: JobContext[InMemoryQueue], job: Job) -> JSON:
        contexts.append(ctx)
        await proceed.wait()
        return f"attempt {job.attempt}"

    leases = queue.leases()
    worker = make_worker(queue, registry, leases=leases, concurrency=1, lease=30)
    async with running(worker):
        job = await queue.enqueue(JobSpec("slow", "u"))
        await wait_for(lambda: len(contexts) == 1, DEADLINE)
        clock.advance(31)  # the worker froze past its lease ...
        await queue.reap_expired()  # ... so another worker's sweep requeued the job
        assert (await state_of(queue, job.id)).state is JobState.QUEUED
        await leases.renew()  # the next renewal finds the lease gone
        assert contexts[0].lease_lost
        proceed.set()
        await wait_for(lambda: worker.stats.succeeded == 1, DEADLINE)
    assert worker.stats.lost == 1
    done = await state_of(queue, job.id)
    assert (done.state, done.attempt, done.result) == (JobState.SUCCEEDED, 2, "attempt 2")


async def test_the_housekeeping_recovers_the_jobs_of_a_dead_worker():
    clock = ManualClock()
    queue = InMemoryQueue(clock=clock)
    registry = HandlerRegistry()

    @registry.handler("work")
    async def work(ctx: JobContext[InMemoryQueue], job: Job) -> JSON:
        return job.attempt

    job = await queue.enqueue(JobSpec("work", "u"))
    [dead] = await queue.claim("dead-worker", 1, lease=1)
    clock.advance(2)
    worker = make_worker(queue, registry, lease=1.0)  # it sweeps every 0.25 s
    async with running(worker):
        await wait_for(lambda: worker.stats.succeeded == 1, DEADLINE)
    assert worker.stats.recovered == 1
    assert dead.id == job.id
    assert (await state_of(queue, job.id)).result == 2


async def test_a_stale_attempt_finishing_leaves_the_new_attempt_of_its_job_held():
    """After an outage a worker may claim again a job whose old attempt it still runs. The
    old attempt ending must not release the new attempt's lease, slot or task."""
    clock = ManualClock()
    queue = InMemoryQueue(clock=clock)
    registry = HandlerRegistry()
    gates = {1: asyncio.Event(), 2: asyncio.Event()}
    started: list[int] = []

    @registry.handler("slow")
    async def slow(ctx: JobContext[InMemoryQueue], job: Job) -> JSON:
        started.append(job.attempt)
        await gates[job.attempt].wait()
        return f"attempt {job.attempt}"

    leases = queue.leases()
    worker = make_worker(queue, registry, leases=leases, concurrency=2, lease=30)
    async with running(worker):
        job = await queue.enqueue(JobSpec("slow", "u"))
        await wait_for(lambda: started == [1], DEADLINE)
        clock.advance(31)  # its lease ran out (Postgres was away) ...
        await queue.reap_expired()  # ... and the job went back to the queue ...
        await wait_for(lambda: started == [1, 2], DEADLINE)  # ... where this worker took it
        gates[1].set()
        await wait_for(lambda: worker.stats.lost == 1, DEADLINE)
        assert leases.held == {job.id: 2}
        assert worker.running == 1
        clock.advance(20)
        await leases.renew()
        clock.advance(20)
        assert await queue.reap_expired() == []  # attempt 2's lease was renewed
        gates[2].set()
        await wait_for(lambda: worker.stats.succeeded == 1, DEADLINE)
    done = await state_of(queue, job.id)
    assert (done.state, done.attempt, done.result) == (JobState.SUCCEEDED, 2, "attempt 2")
