"""The worker's housekeeping loop survives any failure of a step: expired leases keep being
recovered, and the failure is logged."""

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
from mediajobs.queue.models import Transition
from tests.support.workers import queue_pool, running_worker, wait_for

pytestmark = pytest.mark.timeout(60)


class FlakyQueue(JobQueue):
    """The real queue, except that its first ``failures`` lease sweeps raise a bug."""

    def __init__(self, *args: object, failures: int, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.failures = failures
        self.sweeps = 0

    async def reap_expired(self, limit: int = 1000) -> list[Transition]:
        self.sweeps += 1
        if self.sweeps <= self.failures:
            raise RuntimeError(f"sweep {self.sweeps} hit a bug")
        return await super().reap_expired(limit)


async def ok(ctx: JobContext, job: Job) -> object:
    return "done"


async def abandon(queue: JobQueue, kind: str) -> Job:
    """A job as a worker that died while running it leaves it: running, attempt 1, its
    lease expired. (Written directly: a live worker must not claim it first.)"""
    job = await queue.enqueue(JobSpec(kind, "u", delay=3600))
    async with queue.pool.connection() as conn:
        await conn.execute(
            "UPDATE jobs SET state = 'running', attempt = 1, lease_owner = 'dead-worker', "
            "started_at = now(), lease_expires_at = now() - interval '1 second' WHERE id = %s",
            (job.id,),
        )
    found = await queue.get(job.id)
    assert found is not None and found.state is JobState.RUNNING
    return found


async def finished(queue: JobQueue, job_id) -> bool:
    job = await queue.get(job_id)
    return job is not None and job.state is JobState.SUCCEEDED


async def test_a_failing_lease_sweep_is_logged_and_the_next_one_still_recovers(
    database_url, caplog
):
    registry = HandlerRegistry()
    registry.register("ok", ok)
    caplog.set_level(logging.WARNING, logger="mediajobs.queue.worker")
    async with queue_pool(database_url) as pool:
        queue = FlakyQueue(pool, failures=2)
        abandoned = await abandon(queue, "ok")
        # lease 1 s: a sweep every 0.25 s
        async with running_worker(queue, registry, database_url, lease=1.0) as worker:
            await wait_for(lambda: finished(queue, abandoned.id), timeout=20)
        job = await queue.get(abandoned.id)
    assert job is not None and (job.state, job.attempt) == (JobState.SUCCEEDED, 2)
    assert worker.stats.recovered == 1
    assert queue.sweeps >= 3
    failures = [r for r in caplog.records if "recovering expired leases failed" in r.message]
    assert len(failures) == 2
    assert all(r.exc_info and isinstance(r.exc_info[1], RuntimeError) for r in failures)


async def test_a_failing_maintenance_task_does_not_stop_lease_recovery(database_url, caplog):
    calls = 0

    async def broken_task() -> None:
        nonlocal calls
        calls += 1
        raise ValueError("maintenance bug")

    registry = HandlerRegistry()
    registry.register("ok", ok)
    caplog.set_level(logging.WARNING, logger="mediajobs.queue.worker")
    async with queue_pool(database_url) as pool:
        queue = JobQueue(pool)
        options = WorkerOptions(lease=1.0, maintenance_interval=0.25)
        worker = Worker.for_postgres(
            queue, registry, conninfo=database_url, options=options, maintenance=[broken_task]
        )
        task = asyncio.create_task(worker.run())
        try:
            await wait_for(lambda: calls >= 2, timeout=20)
            # Housekeeping is still alive after the failures: a job abandoned now is found.
            abandoned = await abandon(queue, "ok")
            await wait_for(lambda: finished(queue, abandoned.id), timeout=20)
        finally:
            worker.stop()
            await asyncio.wait_for(task, 30)
    assert worker.stats.recovered == 1
    logged = [r for r in caplog.records if "maintenance task broken_task failed" in r.message]
    assert len(logged) >= 2
