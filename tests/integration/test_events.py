"""Event rows, publishing and the hub against the real Postgres and Redis."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from redis.asyncio import Redis

from mediajobs.queue import HandlerRegistry, Job, JobContext, JobQueue, JobSpec, JobState
from mediajobs.queue.models import Cause, Transition
from mediajobs.realtime import EventHub, EventRecorder, EventStore, HubOptions, RedisPublisher
from mediajobs.realtime.events import PendingEvent
from tests.support.workers import queue_pool, running_worker, wait_for

pytestmark = pytest.mark.timeout(60)


def pending(owner: str = "alice", job: uuid.UUID | None = None) -> PendingEvent:
    return PendingEvent(owner, job or uuid.uuid4(), "job_progress", '{"jobId":"x"}')


async def test_event_ids_follow_commit_order_across_concurrent_transactions(database_url):
    async with (
        queue_pool(database_url) as pool,
        pool.connection() as first,
        pool.connection() as second,
    ):
        async with first.transaction():
            [early] = await EventStore.record(first, [pending()])
            # The second writer waits for the first to commit: ids cannot commit out of
            # order, so a reader that sees an id has seen every smaller one.
            late_task = asyncio.create_task(_record_in_transaction(second))
            await wait_for(lambda: _blocked_by(pool, waiter=second, holder=first), timeout=10)
            assert not late_task.done()
        [late] = await asyncio.wait_for(late_task, 5)
    assert late.id == early.id + 1


async def _blocked_by(pool, waiter, holder) -> bool:
    """Whether ``waiter``'s session waits on a lock that ``holder``'s session holds."""
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT %s = ANY(pg_blocking_pids(%s)) AS blocked",
            (holder.info.backend_pid, waiter.info.backend_pid),
        )
        row = await cursor.fetchone()
    return bool(row["blocked"])


async def _record_in_transaction(conn):
    async with conn.transaction():
        return await EventStore.record(conn, [pending()])


async def test_many_events_of_one_transaction_get_consecutive_ids_in_order(database_url):
    async with queue_pool(database_url) as pool, pool.connection() as conn:
        batch = [PendingEvent("alice", uuid.uuid4(), f"t{i}", f'{{"i":{i}}}') for i in range(300)]
        async with conn.transaction():
            recorded = await EventStore.record(conn, batch)
        rows = await (await conn.execute("SELECT id, type FROM job_events ORDER BY id")).fetchall()
    assert [e.type for e in recorded] == [f"t{i}" for i in range(300)]
    assert [(row["id"], row["type"]) for row in rows] == [(e.id, e.type) for e in recorded]
    assert [e.id for e in recorded] == list(range(recorded[0].id, recorded[0].id + 300))


class FailingHooks:
    """Writes the event rows, then fails: the transition must roll back with them."""

    async def record(self, conn, transitions):
        await EventRecorder(None).record(conn, transitions)
        raise RuntimeError("boom")

    async def committed(self, recorded):
        raise AssertionError("never called for a rolled-back transaction")


async def test_a_transition_and_its_event_commit_or_roll_back_together(database_url):
    async with queue_pool(database_url) as pool:
        queue = JobQueue(pool, hooks=FailingHooks())
        enqueued = await JobQueue(pool).enqueue(JobSpec("k", "alice"))
        with pytest.raises(RuntimeError):
            await queue.claim("w", 1, lease=30)
        job = await queue.get(enqueued.id)
        assert job is not None and job.state is JobState.QUEUED
        async with pool.connection() as conn:
            count = await (await conn.execute("SELECT count(*) AS n FROM job_events")).fetchone()
        assert count is not None and count["n"] == 0

        recorded = JobQueue(pool, hooks=EventRecorder(None))
        [claimed] = await recorded.claim("w", 1, lease=30)
        assert await recorded.complete(claimed, {"ok": True})
        events = await EventStore(pool).for_job("alice", claimed.id, 0)
    assert [e.type for e in events] == ["job_started", "job_complete"]
    assert events[1].payload() == {"jobId": str(claimed.id), "result": {"ok": True}}


async def test_with_redis_down_jobs_still_succeed_and_their_events_are_recorded(database_url):
    dead = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    publisher = RedisPublisher(dead, "test:dead", pause=5.0)
    registry = HandlerRegistry()

    async def steps(ctx: JobContext, job: Job) -> object:
        for i in range(3):
            await ctx.progress((i + 1) / 3)
        return {"done": True}

    registry.register("k", steps)
    async with queue_pool(database_url) as pool:
        queue = JobQueue(pool, hooks=EventRecorder(publisher))
        ids = [(await queue.enqueue(JobSpec("k", "alice"))).id for _ in range(5)]
        async with running_worker(queue, registry, database_url, progress_interval=0.0):

            async def all_done() -> bool:
                jobs = [await queue.get(i) for i in ids]
                return all(j is not None and j.state is JobState.SUCCEEDED for j in jobs)

            await wait_for(all_done, 20)
        events = await EventStore(pool).for_owner("alice", 0)
    await dead.aclose()
    assert len(events) == 5 * 5  # started, 3 progress, complete per job
    assert publisher.published == 0 and publisher.failed == 25


async def test_pruning_removes_old_events_and_marks_how_far_it_went(database_url):
    async with queue_pool(database_url) as pool, pool.connection() as conn:
        async with conn.transaction():
            old = await EventStore.record(conn, [pending() for _ in range(7)])
        async with conn.transaction():
            new = await EventStore.record(conn, [pending() for _ in range(3)])
        await conn.execute(
            "UPDATE job_events SET created_at = now() - interval '2 days' WHERE id <= %s",
            (old[-1].id,),
        )
        store = EventStore(pool)
        assert await store.prune(86400) == 7
        position = await store.position()
        remaining = await store.after(0)
    assert position.pruned_through == old[-1].id
    assert position.latest == new[-1].id
    assert [e.id for e in remaining] == [e.id for e in new]


async def test_the_hub_delivers_events_of_concurrent_writers_in_order_through_real_redis(
    database_url, redis_url
):
    channel = f"test:events:{uuid.uuid4().hex}"
    publisher_redis = Redis.from_url(redis_url)
    subscriber = Redis.from_url(redis_url)
    async with queue_pool(database_url, max_size=10) as pool:
        hub = EventHub(EventStore(pool), subscriber, channel, options=HubOptions(poll_interval=60))
        await hub.start()
        assert hub.redis_connected
        sub = hub.register("alice")
        recorder = EventRecorder(RedisPublisher(publisher_redis, channel))

        async def writer(n: int) -> None:
            for _ in range(n):
                async with pool.connection() as conn:
                    async with conn.transaction():
                        job = uuid.uuid4()
                        transition = Transition(
                            job, "alice", "k", JobState.RUNNING, 1, Cause.CLAIMED
                        )
                        recorded = await recorder.record(conn, [transition])
                    await recorder.committed(recorded)

        await asyncio.gather(*(writer(50) for _ in range(6)))
        received: list[int] = []

        async def all_received() -> bool:
            received.extend(e.id for e in sub.take())
            return len(received) >= 300

        await wait_for(all_received, 10)
        await hub.stop()
        expected = [e.id for e in await EventStore(pool).after(0)]
    await publisher_redis.aclose()
    await subscriber.aclose()
    assert received == expected


async def test_a_handler_reporting_thousands_of_times_writes_a_few_events(database_url):
    registry = HandlerRegistry()
    took: list[float] = []

    async def chatty(ctx: JobContext, job: Job) -> object:
        started = asyncio.get_running_loop().time()
        for i in range(1, 3001):
            await ctx.progress(i / 3000, f"item {i}")
            if i % 100 == 0:
                await asyncio.sleep(0.01)
        took.append(asyncio.get_running_loop().time() - started)
        return None

    registry.register("k", chatty)
    async with queue_pool(database_url) as pool:
        queue = JobQueue(pool, hooks=EventRecorder(None))
        job_id = (await queue.enqueue(JobSpec("k", "alice"))).id
        async with running_worker(queue, registry, database_url, progress_interval=0.1):

            async def done() -> bool:
                job = await queue.get(job_id)
                return job is not None and job.state is JobState.SUCCEEDED

            await wait_for(done, 20)
        events = await EventStore(pool).for_job("alice", job_id, 0)
    progress = [e.payload() for e in events if e.type == "job_progress"]
    assert progress[0]["message"] == "item 1"  # the first report goes out at once
    assert progress[-1] == {"jobId": str(job_id), "progress": 1.0, "message": "item 3000"}
    assert 2 <= len(progress) <= took[0] / 0.1 + 3
    assert [e.type for e in events][-1] == "job_complete"
