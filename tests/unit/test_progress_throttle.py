"""Progress reports are throttled at the source: first at once, then at most one per
interval with the newest value, 1.0 at once, and the pending one flushed at the end."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pytest

from mediajobs.errors import LeaseLost
from mediajobs.queue.models import Job, JobState
from mediajobs.queue.registry import JobContext
from tests.support.waiting import wait_for


class RecordingQueue:
    def __init__(self) -> None:
        self.writes: list[tuple[float, str | None]] = []
        self.lost = False

    async def set_progress(self, job: Job, progress: float, message: str | None = None) -> bool:
        if self.lost:
            raise LeaseLost("gone")
        await asyncio.sleep(0)
        self.writes.append((progress, message))
        return False


def job() -> Job:
    now = datetime.now(UTC)
    return Job(
        uuid.uuid4(), "k", "u", {}, JobState.RUNNING, 0, now, 1, 5, "w", now, False, 0.0,
        None, None, None, None, now, now, now, None,
    )  # fmt: skip


class StoppedClock:
    """The throttle's clock, standing still: however slowly the machine runs the burst,
    no report falls due again until the deferred write (its timer still runs)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def context(queue: RecordingQueue, interval: float) -> JobContext:
    return JobContext(
        job(),
        queue=queue,  # type: ignore[arg-type]
        worker_name="w",
        progress_interval=interval,
        clock=StoppedClock(),
    )


async def test_a_burst_of_reports_writes_the_first_and_then_the_newest_per_interval():
    queue = RecordingQueue()
    ctx = context(queue, interval=0.1)
    for i in range(1, 1001):
        await ctx.progress(i / 2000, f"step {i}")
    assert queue.writes == [(0.0005, "step 1")]
    await wait_for(lambda: len(queue.writes) > 1, timeout=10)
    assert queue.writes[-1] == (0.5, "step 1000")  # the deferred write carries the newest
    assert len(queue.writes) == 2


async def test_completion_and_the_end_of_the_job_are_never_throttled_away():
    queue = RecordingQueue()
    ctx = context(queue, interval=10)
    await ctx.progress(0.1)
    await ctx.progress(0.2)
    await ctx.progress(0.3, "almost")
    await ctx.flush_progress()  # the worker does this when the handler returns
    await ctx.progress(1.0, "done")
    assert queue.writes == [(0.1, None), (0.3, "almost"), (1.0, "done")]


async def test_a_discarded_report_is_never_written():
    queue = RecordingQueue()
    ctx = context(queue, interval=0.05)
    await ctx.progress(0.1)
    await ctx.progress(0.2)
    ctx.discard_progress()
    # Past the interval the timer, had it been left, has fired before this sleep ends (timers
    # run in order); flush_progress then awaits its write and writes whatever is pending.
    await asyncio.sleep(0.06)
    await ctx.flush_progress()
    assert queue.writes == [(0.1, None)]


async def test_a_lost_lease_surfaces_on_the_next_report():
    queue = RecordingQueue()
    ctx = context(queue, interval=0.0)
    await ctx.progress(0.1)
    queue.lost = True
    with pytest.raises(LeaseLost):
        await ctx.progress(0.2)
    assert ctx.lease_lost
