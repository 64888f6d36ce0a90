"""A second stop (Ctrl-C twice) ends the grace period a first one started: the running
jobs are handed back at once instead of after the grace."""

from __future__ import annotations

import asyncio
import logging

import pytest

from mediajobs.queue import (
    HandlerRegistry,
    Job,
    JobContext,
    JobQueue,
    JobSpec,
    JobState,
    Worker,
    WorkerOptions,
)
from tests.support.workers import queue_pool, wait_for

pytestmark = pytest.mark.timeout(60)


async def test_a_second_stop_during_the_grace_period_hands_running_jobs_back_at_once(
    database_url, caplog
):
    caplog.set_level(logging.INFO, logger="mediajobs.queue.worker")
    started = asyncio.Event()

    async def slow(ctx: JobContext, job: Job) -> object:
        started.set()
        await asyncio.sleep(3600)
        return None

    registry = HandlerRegistry()
    registry.register("slow", slow)
    async with queue_pool(database_url) as pool:
        queue = JobQueue(pool)
        job = await queue.enqueue(JobSpec("slow", "u"))
        # A grace period longer than this test's timeout: only the second stop ends it.
        options = WorkerOptions(shutdown_grace=3600)
        worker = Worker.for_postgres(queue, registry, conninfo=database_url, options=options)
        run = asyncio.create_task(worker.run())
        await asyncio.wait_for(started.wait(), 10)
        worker.stop()
        await wait_for(lambda: "waiting up to" in caplog.text, timeout=30)  # the grace period
        done, _ = await asyncio.wait({run}, timeout=0.3)
        assert not done  # the first stop waits for the running job
        worker.stop()
        stats = await asyncio.wait_for(run, 30)
        after = await queue.get(job.id)
    assert stats.handed_back == 1
    assert after is not None and (after.state, after.lease_owner) == (JobState.QUEUED, None)
