"""InMemoryQueue, the queue's test double: the queue contract (the same tests JobQueue passes
on Postgres), and what only the double has: its clock, its leases, copies out, reset."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from mediajobs.queue import (
    Cause,
    InMemoryNotifier,
    InMemoryQueue,
    JobSpec,
    JobState,
    ManualClock,
)
from mediajobs.realtime.events import pending_events
from tests.contract.queue_contract import QueueContract, RecordingHooks

pytestmark = pytest.mark.timeout(30)


class MemoryHarness:
    """The contract's harness for ``InMemoryQueue``: time passes on a ``ManualClock``."""

    def __init__(self) -> None:
        self.clock = ManualClock()
        self.hooks = RecordingHooks()
        self.queue = InMemoryQueue(hooks=self.hooks, clock=self.clock)

    async def pass_time(self, seconds: float) -> None:
        self.clock.advance(seconds)

    def notifier(self) -> InMemoryNotifier:
        return self.queue.notifier()


class TestInMemoryQueue(QueueContract):
    @pytest.fixture
    def harness(self) -> MemoryHarness:
        return MemoryHarness()


def test_the_manual_clock_moves_only_when_told_and_never_reads_the_same_twice():
    start = datetime(2030, 5, 1, tzinfo=UTC)
    clock = ManualClock(start)
    first, second = clock(), clock()
    assert start < first < second < start + timedelta(milliseconds=1)
    clock.advance(90)
    assert clock() - second == pytest.approx(timedelta(seconds=90), abs=timedelta(seconds=1e-3))


async def test_jobs_come_out_as_copies_and_payloads_go_in_as_json():
    queue = InMemoryQueue(clock=ManualClock())
    payload = {"tags": ("a", "b"), "n": 1}
    job_id = (await queue.enqueue(JobSpec("k", "u", payload))).id
    payload["n"] = 2
    job = await queue.get(job_id)
    assert job is not None and job.payload == {"tags": ["a", "b"], "n": 1}
    job.payload["n"] = 3
    assert (await queue.get(job_id)).payload["n"] == 1  # type: ignore[union-attr]
    with pytest.raises(TypeError):
        await queue.enqueue(JobSpec("k", "u", {"when": datetime.now(UTC)}))  # type: ignore[dict-item]
    assert [j.id for j in queue.jobs] == [job_id]
    queue.reset()
    assert queue.jobs == [] and await queue.get(job_id) is None


async def test_the_wall_clock_is_the_default():
    queue = InMemoryQueue()
    before = datetime.now(UTC)
    job = await queue.get((await queue.enqueue(JobSpec("k", "u"))).id)
    assert job is not None and before <= job.created_at <= datetime.now(UTC)


async def test_leases_renew_on_the_queues_clock_and_report_cancel_flags_and_losses():
    clock = ManualClock()
    queue = InMemoryQueue(clock=clock)
    await queue.enqueue_many([JobSpec("k", "u")] * 3)
    kept, cancelled, lost = await queue.claim("w", 3, lease=30)
    leases = queue.leases()
    reported: list[tuple[str, uuid.UUID]] = []
    leases.start(
        asyncio.get_running_loop(),
        lease=30,
        on_cancel=lambda job_id: reported.append(("cancel", job_id)),
        on_lost=lambda job_id: reported.append(("lost", job_id)),
    )
    try:
        for job in (kept, cancelled, lost):
            leases.hold(job)
        assert await queue.cancel(cancelled.id) is JobState.RUNNING
        clock.advance(20)
        leases.release(lost)
        await leases.renew()  # kept and cancelled renewed from now; lost no longer held
        assert reported == [("cancel", cancelled.id)]
        assert leases.renewals == 1
        assert set(leases.held) == {kept.id, cancelled.id}

        clock.advance(20)  # 40 s after the claim: only the job nobody renewed has expired
        [reaped] = await queue.reap_expired()
        assert (reaped.job_id, reaped.state, reaped.cause) == (
            lost.id,
            JobState.QUEUED,
            Cause.REQUEUED,
        )
        leases.hold(lost)  # as if this worker still ran the reaped attempt
        reported.clear()
        await leases.renew()
        assert sorted(reported) == sorted([("cancel", cancelled.id), ("lost", lost.id)])
    finally:
        await leases.stop()
    stored = await queue.get(kept.id)
    assert stored is not None and stored.lease_expires_at is not None
    remaining = (stored.lease_expires_at - clock()).total_seconds()
    assert remaining == pytest.approx(30, abs=1e-3)


async def test_transitions_of_the_double_become_the_same_events_as_on_postgres():
    """The realtime layer maps transitions to events; the double's cancel paths end with
    `job_cancelled`, as tests/integration/test_cancel_paths.py shows for Postgres."""
    clock = ManualClock()
    hooks = RecordingHooks()
    queue = InMemoryQueue(hooks=hooks, clock=clock)
    kind = "media.process"
    queued = (await queue.enqueue(JobSpec(kind, "alice"))).id
    assert await queue.cancel(queued) is JobState.CANCELLED
    running = (await queue.enqueue(JobSpec(kind, "alice"))).id
    [job] = await queue.claim("w", 1, lease=1)
    assert await queue.cancel(running) is JobState.RUNNING
    clock.advance(2)
    await queue.reap_expired()
    types = {
        job_id: [e.type for e in pending_events(hooks.recorded) if e.job_id == job_id]
        for job_id in (queued, running)
    }
    assert types[queued] == ["job_cancelled"]
    assert types[running][-1] == "job_cancelled"
    assert "upload_failed" not in types[running]
    assert job.id == running
