"""Kind limits (``WorkerOptions.kind_limits``) over InMemoryQueue: a limited kind never runs
more jobs at once than its limit, no claim asks for more of it than its remaining allowance,
and the other kinds are claimed at once while the limited kind is at its limit."""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from mediajobs.queue import (
    HandlerRegistry,
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
BULK = "test.bulk"  # the limited kind (as ingest.batch is in production)
QUICK = "test.quick"  # an unlimited kind (as media.process is)


class ClaimLog(InMemoryQueue):
    """Keeps every claim statement: the kinds it asked for, its limit, and the jobs of each
    kind the worker was running when it was issued (``running`` is set by the test)."""

    def __init__(self) -> None:
        super().__init__(clock=ManualClock())
        self.running: collections.Counter[str] = collections.Counter()
        self.claims: list[tuple[tuple[str, ...], int, int]] = []

    async def claim(
        self, owner: str, limit: int, *, lease: float, kinds: Sequence[str] | None = None
    ) -> list[Job]:
        asked = tuple(kinds or ())
        self.claims.append((asked, limit, self.running[BULK]))
        return await super().claim(owner, limit, lease=lease, kinds=kinds)


def make_worker(queue: InMemoryQueue, registry: HandlerRegistry, **options: Any) -> Worker:
    """A worker on ``queue`` that polls once an hour: it claims when woken or when a slot
    frees, never because time passed."""
    return Worker(
        queue,
        registry,
        leases=queue.leases(),
        notifier=queue.notifier(),
        options=WorkerOptions(**{"poll_interval": 3600.0, **options}),
    )


@contextlib.asynccontextmanager
async def running(worker: Worker) -> AsyncIterator[asyncio.Task[Any]]:
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(worker.notifier.connected.wait(), DEADLINE)
    try:
        yield task
    finally:
        if not task.done():
            worker.stop()
            worker.stop()  # no grace period: the test is over
        await asyncio.wait_for(task, DEADLINE)


def counting_registry(
    queue: ClaimLog, gates: dict[str, asyncio.Event] | None = None
) -> tuple[HandlerRegistry, collections.Counter[str], list[str]]:
    """Handlers for BULK and QUICK that count the jobs of each kind running at once (the
    most in ``peaks``) and log each finished job's kind in ``done``. With ``gates``, a job
    waits for the gate of its kind before it finishes."""
    registry = HandlerRegistry()
    peaks: collections.Counter[str] = collections.Counter()
    done: list[str] = []

    async def work(ctx: JobContext[InMemoryQueue], job: Job) -> JSON:
        queue.running[job.kind] += 1
        peaks[job.kind] = max(peaks[job.kind], queue.running[job.kind])
        peaks["all"] = max(peaks["all"], sum(queue.running.values()))
        try:
            if gates is not None:
                await gates[job.kind].wait()
            for _ in range(3):
                await asyncio.sleep(0)  # let the others interleave
        finally:
            queue.running[job.kind] -= 1
        done.append(job.kind)
        return None

    registry.handler(BULK)(work)
    registry.handler(QUICK)(work)
    return registry, peaks, done


async def test_a_limited_kind_never_runs_more_than_its_limit_and_every_job_runs():
    queue = ClaimLog()
    registry, peaks, done = counting_registry(queue)
    await queue.enqueue_many(JobSpec(BULK, "u", {"i": i}) for i in range(30))
    await queue.enqueue_many(JobSpec(QUICK, "u", {"i": i}, priority=-20) for i in range(30))
    worker = make_worker(queue, registry, concurrency=6, kind_limits={BULK: 2}, burst=True)

    stats = await asyncio.wait_for(worker.run(), DEADLINE)

    assert (stats.claimed, stats.succeeded) == (60, 60)
    assert collections.Counter(done) == {BULK: 30, QUICK: 30}
    assert peaks[BULK] == 2  # its limit, reached and never passed
    assert 2 < peaks["all"] <= 6  # the other kind used the rest of the slots
    # No claim asked for more of the limited kind than its remaining allowance, and none
    # asked for both kinds at once.
    bulk_claims = [(limit, busy) for kinds, limit, busy in queue.claims if kinds == (BULK,)]
    assert bulk_claims and all(limit <= 2 - busy for limit, busy in bulk_claims)
    assert all(kinds in {(BULK,), (QUICK,)} for kinds, _, _ in queue.claims)


async def test_another_kind_starts_at_once_while_the_limited_kind_is_saturated():
    queue = ClaimLog()
    gates = {BULK: asyncio.Event(), QUICK: asyncio.Event()}
    gates[QUICK].set()
    registry, peaks, done = counting_registry(queue, gates)
    # Bulk work first in claim order: the limit, not the priority, keeps slots for QUICK.
    bulk = await queue.enqueue_many(JobSpec(BULK, "u", priority=10) for _ in range(6))
    worker = make_worker(queue, registry, concurrency=4, kind_limits={BULK: 2})

    async with running(worker):
        await wait_for(lambda: queue.running[BULK] == 2, DEADLINE)
        quick = await queue.enqueue(JobSpec(QUICK, "u"))
        await wait_for(lambda: done == [QUICK], DEADLINE)
        assert queue.running[BULK] == 2  # the limited kind still holds its allowance
        states = collections.Counter([(await queue.get(job_id)).state for job_id in bulk])  # type: ignore[union-attr]
        assert states == {JobState.RUNNING: 2, JobState.QUEUED: 4}
        assert (await queue.get(quick.id)).state is JobState.SUCCEEDED  # type: ignore[union-attr]

        # Once the gate opens, the freed allowance is claimed at once (no poll: the
        # worker polls once an hour), always within the limit.
        gates[BULK].set()
        await wait_for(lambda: done.count(BULK) == 6, DEADLINE)
    assert peaks[BULK] == 2


async def test_a_worker_of_only_limited_kinds_stays_within_each_limit():
    queue = ClaimLog()
    registry, peaks, done = counting_registry(queue)
    await queue.enqueue_many(JobSpec(BULK, "u") for _ in range(10))
    await queue.enqueue_many(JobSpec(QUICK, "u") for _ in range(10))
    worker = make_worker(
        queue, registry, concurrency=8, kind_limits={BULK: 3, QUICK: 1}, burst=True
    )

    stats = await asyncio.wait_for(worker.run(), DEADLINE)

    assert stats.succeeded == 20
    assert collections.Counter(done) == {BULK: 10, QUICK: 10}
    assert (peaks[BULK], peaks[QUICK]) == (3, 1)
    # One statement per limited kind per claim; none asks for more than the limit.
    assert {kinds for kinds, _, _ in queue.claims} == {(BULK,), (QUICK,)}
    assert all(limit <= (3 if kinds == (BULK,) else 1) for kinds, limit, _ in queue.claims)


async def test_a_limit_on_a_kind_the_worker_does_not_handle_changes_nothing():
    queue = ClaimLog()
    registry, peaks, done = counting_registry(queue)
    await queue.enqueue_many(JobSpec(QUICK, "u") for _ in range(12))
    worker = make_worker(
        queue, registry, concurrency=4, kinds=[QUICK], kind_limits={BULK: 1}, burst=True
    )

    stats = await asyncio.wait_for(worker.run(), DEADLINE)

    assert stats.succeeded == 12
    assert done == [QUICK] * 12
    assert peaks[QUICK] == 4
    assert {kinds for kinds, _, _ in queue.claims} == {(QUICK,)}
