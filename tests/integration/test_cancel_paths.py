"""Every path by which a job whose cancel was requested ends: it ends `cancelled`, and the
events clients get (published live and stored for replay) end with `job_cancelled`, never
`upload_failed` or a requeue."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

import pytest

from mediajobs.errors import JobFailed
from mediajobs.queue import HandlerRegistry, Job, JobContext, JobQueue, JobSpec, JobState
from mediajobs.realtime import EventRecorder, EventStore
from mediajobs.realtime.events import Event
from tests.support.workers import queue_pool, running_worker, wait_for

pytestmark = pytest.mark.timeout(60)

KIND = "media.process"  # event family "upload": a wrong ending would be upload_failed


class CapturingPublisher:
    """Keeps what would go to Redis: the events clients receive live."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    async def publish(self, events: Sequence[Event]) -> None:
        self.events.extend(events)


async def outcome(
    queue: JobQueue, store: EventStore, published: CapturingPublisher, job_id: uuid.UUID
) -> tuple[JobState, str, list[str]]:
    """The job's state and error code, and the event types clients got (live and stored
    must agree)."""
    job = await queue.get(job_id)
    assert job is not None
    stored = [event.type for event in await store.for_job("alice", job_id, 0)]
    live = [event.type for event in published.events if event.job_id == job_id]
    assert live == stored
    return job.state, (job.error or {}).get("code", ""), stored  # type: ignore[return-value]


async def backdate_lease(queue: JobQueue, job_id: uuid.UUID) -> None:
    async with queue.pool.connection() as conn:
        await conn.execute(
            "UPDATE jobs SET lease_expires_at = now() - interval '1 second' WHERE id = %s",
            (job_id,),
        )


async def test_cancel_of_a_queued_job_sends_job_cancelled(database_url):
    published = CapturingPublisher()
    async with queue_pool(database_url) as pool:
        queue = JobQueue(pool, hooks=EventRecorder(published))
        job = await queue.enqueue(JobSpec(KIND, "alice"))
        assert await queue.cancel(job.id) is JobState.CANCELLED
        state, _, types = await outcome(queue, EventStore(pool), published, job.id)
    assert (state, types) == (JobState.CANCELLED, ["job_cancelled"])


async def test_cancel_honoured_by_its_handler_sends_job_cancelled(database_url):
    started = asyncio.Event()

    async def cooperative(ctx: JobContext, job: Job) -> object:
        started.set()
        while True:
            ctx.raise_if_cancelled()
            await asyncio.sleep(0.01)

    registry = HandlerRegistry()
    registry.register(KIND, cooperative)
    published = CapturingPublisher()
    async with queue_pool(database_url) as pool:
        queue = JobQueue(pool, hooks=EventRecorder(published))
        job = await queue.enqueue(JobSpec(KIND, "alice"))
        async with running_worker(queue, registry, database_url) as worker:
            await asyncio.wait_for(started.wait(), 10)
            assert await queue.cancel(job.id) is JobState.RUNNING
            await wait_for(lambda: _finished(queue, job.id), timeout=10)
        state, code, types = await outcome(queue, EventStore(pool), published, job.id)
    assert (state, code) == (JobState.CANCELLED, "cancelled")
    assert types == ["upload_started", "job_cancelled"]
    assert worker.stats.cancelled == 1


async def test_cancel_requested_then_the_worker_dies_sends_job_cancelled(database_url):
    published = CapturingPublisher()
    async with queue_pool(database_url) as pool:
        queue = JobQueue(pool, hooks=EventRecorder(published))
        job = await queue.enqueue(JobSpec(KIND, "alice", max_attempts=3))
        [claimed] = await queue.claim("doomed-worker", 1, lease=30.0)  # then it "dies"
        assert claimed.id == job.id
        assert await queue.cancel(job.id) is JobState.RUNNING
        await backdate_lease(queue, job.id)
        [recovered] = await queue.reap_expired()
        state, code, types = await outcome(queue, EventStore(pool), published, job.id)
    assert recovered.state is JobState.CANCELLED
    assert (state, code) == (JobState.CANCELLED, "cancelled")
    assert types == ["upload_started", "job_cancelled"]


async def test_a_job_out_of_attempts_whose_worker_dies_still_fails_with_lease_expired(
    database_url,
):
    # The other side of the rule: without a cancel request, recovery keeps failing the job.
    published = CapturingPublisher()
    async with queue_pool(database_url) as pool:
        queue = JobQueue(pool, hooks=EventRecorder(published))
        job = await queue.enqueue(JobSpec(KIND, "alice", max_attempts=1))
        await queue.claim("doomed-worker", 1, lease=30.0)
        await backdate_lease(queue, job.id)
        await queue.reap_expired()
        state, code, types = await outcome(queue, EventStore(pool), published, job.id)
    assert (state, code) == (JobState.FAILED, "lease_expired")
    assert types == ["upload_started", "upload_failed"]


async def test_cancel_requested_then_the_worker_stops_sends_job_cancelled(database_url):
    started = asyncio.Event()

    async def deaf(ctx: JobContext, job: Job) -> object:
        started.set()
        await asyncio.sleep(3600)  # never looks at ctx.cancel_requested
        return None

    registry = HandlerRegistry()
    registry.register(KIND, deaf)
    published = CapturingPublisher()
    async with queue_pool(database_url) as pool:
        queue = JobQueue(pool, hooks=EventRecorder(published))
        job = await queue.enqueue(JobSpec(KIND, "alice"))
        async with running_worker(queue, registry, database_url, shutdown_grace=0.2) as worker:
            await asyncio.wait_for(started.wait(), 10)
            assert await queue.cancel(job.id) is JobState.RUNNING
        # Leaving the block stopped the worker: after the grace it handed the job back.
        state, code, types = await outcome(queue, EventStore(pool), published, job.id)
    assert (state, code) == (JobState.CANCELLED, "cancelled")
    assert types == ["upload_started", "job_cancelled"]
    job_row = await _job(database_url, job.id)
    assert job_row.finished_at is not None and job_row.lease_owner is None
    assert worker.stats.claimed == 1
    assert (worker.stats.cancelled, worker.stats.handed_back) == (1, 0)  # not counted requeued


async def test_handed_back_before_the_handler_started_a_cancel_requested_job_is_cancelled(
    database_url,
):
    published = CapturingPublisher()
    async with queue_pool(database_url) as pool:
        queue = JobQueue(pool, hooks=EventRecorder(published))
        job = await queue.enqueue(JobSpec(KIND, "alice"))
        [claimed] = await queue.claim("stopping-worker", 1, lease=30.0)
        assert await queue.cancel(job.id) is JobState.RUNNING
        assert await queue.hand_back([claimed], started=False) == {job.id: JobState.CANCELLED}
        state, _, types = await outcome(queue, EventStore(pool), published, job.id)
    assert (state, types) == (JobState.CANCELLED, ["upload_started", "job_cancelled"])


@pytest.mark.parametrize(
    "ending",
    [
        pytest.param(JobFailed("the image is corrupt", code="corrupt_image"), id="fails"),
        pytest.param(RuntimeError("a bug"), id="raises"),
    ],
)
async def test_cancel_requested_then_the_handler_fails_sends_job_cancelled(database_url, ending):
    started = asyncio.Event()
    cancel_sent = asyncio.Event()

    async def failing(ctx: JobContext, job: Job) -> object:
        started.set()
        await cancel_sent.wait()  # fails right after the request, heard of it or not
        raise ending

    registry = HandlerRegistry()
    registry.register(KIND, failing)
    published = CapturingPublisher()
    async with queue_pool(database_url) as pool:
        queue = JobQueue(pool, hooks=EventRecorder(published))
        job = await queue.enqueue(JobSpec(KIND, "alice", max_attempts=3))
        async with running_worker(queue, registry, database_url) as worker:
            await asyncio.wait_for(started.wait(), 10)
            assert await queue.cancel(job.id) is JobState.RUNNING
            cancel_sent.set()
            await wait_for(lambda: _finished(queue, job.id), timeout=10)
        state, code, types = await outcome(queue, EventStore(pool), published, job.id)
        row = await queue.get(job.id)
    assert (state, code) == (JobState.CANCELLED, "cancelled")
    assert types == ["upload_started", "job_cancelled"]  # no retry, no upload_failed
    assert row is not None and row.attempt == 1
    assert worker.stats.cancelled == 1 and worker.stats.failed == worker.stats.retried == 0


async def _finished(queue: JobQueue, job_id: uuid.UUID) -> bool:
    job = await queue.get(job_id)
    return job is not None and job.state in (
        JobState.SUCCEEDED,
        JobState.FAILED,
        JobState.CANCELLED,
    )


async def _job(database_url: str, job_id: uuid.UUID) -> Job:
    async with queue_pool(database_url) as pool:
        job = await JobQueue(pool).get(job_id)
    assert job is not None
    return job
