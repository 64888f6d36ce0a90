"""JobQueue against the real Postgres: enqueue, claim, fencing, cancel, retention."""

from __future__ import annotations

import asyncio
import uuid

import psycopg
import pytest

from mediajobs.errors import JobFailed, LeaseLost, Retry
from mediajobs.queue import JobQueue, JobSpec, JobState, sql
from tests.support.workers import expire_lease, queue_pool


async def count_jobs(database_url: str) -> int:
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        row = await (await conn.execute("SELECT count(*) FROM jobs")).fetchone()
    assert row is not None
    return int(row[0])


async def test_enqueue_rolled_back_with_the_callers_transaction_leaves_no_job(database_url):
    async with queue_pool(database_url) as pool:
        queue = JobQueue(pool)
        with pytest.raises(RuntimeError, match="caller failed"):
            async with pool.connection() as conn, conn.transaction():
                await queue.enqueue(JobSpec("media.process", "u1"), conn=conn)
                await queue.enqueue_many([JobSpec("media.process", "u1")] * 3, conn=conn)
                raise RuntimeError("caller failed after enqueueing")
        assert await count_jobs(database_url) == 0

        async with pool.connection() as conn, conn.transaction():
            committed = await queue.enqueue(JobSpec("media.process", "u1"), conn=conn)
        job = await queue.get(committed.id)
        assert job is not None
        assert job.state is JobState.QUEUED
        assert await count_jobs(database_url) == 1


async def test_enqueue_wakes_listeners_only_on_commit(database_url):
    async with queue_pool(database_url) as pool:
        queue = JobQueue(pool)
        listener = await psycopg.AsyncConnection.connect(database_url, autocommit=True)
        await listener.execute("LISTEN mediajobs_jobs")
        async with pool.connection() as conn:
            with pytest.raises(RuntimeError):
                async with conn.transaction():
                    await queue.enqueue(JobSpec("k", "u1"), conn=conn)
                    raise RuntimeError
        assert [n async for n in listener.notifies(timeout=0.3)] == []
        await queue.enqueue_many([JobSpec("k", "u1")] * 50)
        received = [n async for n in listener.notifies(timeout=0.3)]
        assert len(received) == 1  # one hint per statement, payload-free
        assert received[0].payload == ""
        await listener.close()


async def test_idempotency_key_returns_the_same_job_per_owner_even_after_archiving(database_url):
    async with queue_pool(database_url) as pool:
        queue = JobQueue(pool)
        first = await queue.enqueue(JobSpec("k", "alice", {"a": 1}, idempotency_key="upload-1"))
        again = await queue.enqueue(JobSpec("k", "alice", {"a": 2}, idempotency_key="upload-1"))
        other = await queue.enqueue(JobSpec("k", "bob", {"a": 3}, idempotency_key="upload-1"))
        assert first.created and not again.created
        assert again.id == first.id
        assert other.created and other.id != first.id
        concurrent = await asyncio.gather(
            *(queue.enqueue(JobSpec("k", "carol", idempotency_key="race")) for _ in range(10))
        )
        assert len({e.id for e in concurrent}) == 1
        assert sum(e.created for e in concurrent) == 1

        [claimed] = await queue.claim("w", 1, lease=30, kinds=["k"])
        assert claimed.id == first.id
        assert await queue.complete(claimed, {"ok": True})
        archived = await queue.maintain(hot_age=0, archive_age=86400)
        assert archived.ran and archived.archived == 1
        after = await queue.enqueue(JobSpec("k", "alice", idempotency_key="upload-1"))
        assert after == type(after)(id=first.id, created=False)
        assert await count_jobs(database_url) == 2  # alice, bob, carol; alice archived


async def test_claim_takes_at_most_limit_in_priority_then_age_order(database_url):
    async with queue_pool(database_url) as pool:
        queue = JobQueue(pool)
        low = await queue.enqueue_many([JobSpec("k", "u", {"i": i}) for i in range(5)])
        high = await queue.enqueue(JobSpec("k", "u", priority=10))
        later = await queue.enqueue(JobSpec("k", "u", priority=100, delay=60))
        other_kind = await queue.enqueue(JobSpec("other", "u", priority=50))

        claimed = await queue.claim("w1", 3, lease=30, kinds=["k"])
        assert next(job.id for job in claimed) == high.id
        assert len(claimed) == 3
        assert {job.id for job in claimed} == {high.id, *low[:2]}
        assert all(job.state is JobState.RUNNING and job.attempt == 1 for job in claimed)
        assert all(job.lease_owner == "w1" for job in claimed)

        rest = await queue.claim("w2", 100, lease=30, kinds=["k"])
        assert {job.id for job in rest} == set(low[2:])  # not the delayed one
        assert later.id not in {job.id for job in rest}
        anything = await queue.claim("w3", 100, lease=30)
        assert [job.id for job in anything] == [other_kind.id]


async def test_two_claimers_never_get_the_same_job(database_url):
    async with queue_pool(database_url, max_size=10) as pool:
        queue = JobQueue(pool)
        await queue.enqueue_many([JobSpec("k", "u")] * 500)
        batches = await asyncio.gather(*(queue.claim(f"w{i}", 37, lease=30) for i in range(20)))
        ids = [job.id for batch in batches for job in batch]
        assert len(ids) == len(set(ids)) == 500


async def test_fencing_refuses_a_stale_attempt_after_its_lease_was_taken_over(database_url):
    async with queue_pool(database_url) as pool:
        queue = JobQueue(pool)
        await queue.enqueue(JobSpec("k", "u"))
        [stale] = await queue.claim("dead-worker", 1, lease=1)
        await expire_lease(pool, stale.id)
        [recovered] = await queue.reap_expired()
        assert recovered.state is JobState.QUEUED
        assert recovered.error is not None and recovered.error["code"] == "lease_expired"
        [fresh] = await queue.claim("live-worker", 1, lease=30)
        assert fresh.id == stale.id and fresh.attempt == 2

        assert not await queue.complete(stale, {"from": "dead"})
        with pytest.raises(LeaseLost):
            await queue.set_progress(stale, 0.5, "late")
        assert await queue.fail(stale, JobFailed("late", code="late"), delay=0) is None
        assert not await queue.mark_cancelled(stale)

        assert await queue.complete(fresh, {"from": "live"})
        job = await queue.get(fresh.id)
        assert job is not None
        assert (job.state, job.attempt, job.result) == (JobState.SUCCEEDED, 2, {"from": "live"})


async def test_expired_lease_out_of_attempts_fails_the_job(database_url):
    async with queue_pool(database_url) as pool:
        queue = JobQueue(pool)
        await queue.enqueue(JobSpec("k", "u", max_attempts=1))
        [job] = await queue.claim("w", 1, lease=1)
        await expire_lease(pool, job.id)
        [transition] = await queue.reap_expired()
        assert transition.state is JobState.FAILED
        stored = await queue.get(job.id)
        assert stored is not None and stored.state is JobState.FAILED
        assert stored.error == {
            "code": "lease_expired",
            "message": "the worker running attempt 1 stopped renewing its lease",
            "retryable": False,
        }


async def test_fail_requeues_retryable_errors_with_delay_and_fails_the_rest(database_url):
    async with queue_pool(database_url) as pool:
        queue = JobQueue(pool)
        await queue.enqueue(JobSpec("k", "u", max_attempts=2))
        [job] = await queue.claim("w", 1, lease=30)
        assert await queue.fail(job, Retry("flaky", code="upstream_timeout"), delay=60) is (
            JobState.QUEUED
        )
        stored = await queue.get(job.id)
        assert stored is not None and stored.lease_owner is None
        assert (stored.run_at - stored.updated_at).total_seconds() == pytest.approx(60, abs=1)
        assert await queue.claim("w", 1, lease=30) == []  # not before run_at

        async with pool.connection() as conn:
            await conn.execute("UPDATE jobs SET run_at = now() WHERE id = %s", (job.id,))
        [second] = await queue.claim("w", 1, lease=30)
        assert second.attempt == 2
        assert await queue.fail(second, Retry("flaky again"), delay=0) is JobState.FAILED
        stored = await queue.get(job.id)
        assert stored is not None and stored.finished_at is not None
        assert stored.error == {"code": "retry", "message": "flaky again", "retryable": True}


async def test_cancel_ends_a_queued_job_at_once_and_flags_a_running_one(database_url):
    async with queue_pool(database_url) as pool:
        queue = JobQueue(pool)
        queued = await queue.enqueue(JobSpec("k", "alice", delay=60))
        running = await queue.enqueue(JobSpec("k", "alice"))
        [claimed] = await queue.claim("w", 1, lease=30)
        assert claimed.id == running.id

        assert await queue.cancel(queued.id, owner_id="bob") is None  # not bob's job
        assert await queue.cancel(queued.id, owner_id="alice") is JobState.CANCELLED
        assert await queue.cancel(queued.id) is None  # already finished
        assert await queue.cancel(running.id) is JobState.RUNNING
        assert await queue.set_progress(claimed, 0.3) is True  # the handler sees the flag
        assert await queue.mark_cancelled(claimed)
        states = {j: (await queue.get(j)).state for j in (queued.id, running.id)}  # type: ignore[union-attr]
        assert states == {queued.id: JobState.CANCELLED, running.id: JobState.CANCELLED}
        assert await queue.cancel(uuid.uuid4()) is None


async def test_maintenance_moves_finished_jobs_to_the_archive_and_prunes_it(database_url):
    async with queue_pool(database_url) as pool:
        queue = JobQueue(pool)
        await queue.enqueue_many([JobSpec("k", "u")] * 30)
        claimed = await queue.claim("w", 20, lease=30)
        assert await queue.complete_many([(job, None) for job in claimed]) == {
            job.id for job in claimed
        }
        kept = await queue.maintain(hot_age=3600, archive_age=86400)
        assert (kept.ran, kept.archived) == (True, 0)
        moved = await queue.maintain(hot_age=0, archive_age=86400)
        assert moved.archived == 20
        counts = await queue.counts()
        assert counts[JobState.SUCCEEDED] == 0 and counts[JobState.QUEUED] == 10
        archived = await queue.get(claimed[0].id)
        assert archived is not None and archived.state is JobState.SUCCEEDED
        pruned = await queue.maintain(hot_age=0, archive_age=0)
        assert pruned.pruned == 20
        assert await queue.get(claimed[0].id) is None


async def test_maintenance_runs_in_one_process_at_a_time(database_url):
    async with queue_pool(database_url) as pool:
        queue = JobQueue(pool)
        async with pool.connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_maintenance_key(),))
            other = await queue.maintain(hot_age=0, archive_age=86400)
        assert other.ran is False


def _maintenance_key() -> int:
    from mediajobs.queue.sql import MAINTENANCE_LOCK_KEY

    return MAINTENANCE_LOCK_KEY


async def test_progress_is_stored_on_the_row_and_bounded(database_url):
    async with queue_pool(database_url) as pool:
        queue = JobQueue(pool)
        await queue.enqueue(JobSpec("k", "u"))
        [job] = await queue.claim("w", 1, lease=30)
        assert await queue.set_progress(job, 0.25, "decoding") is False
        stored = await queue.get(job.id)
        assert stored is not None and (stored.progress, stored.message) == (0.25, "decoding")
        with pytest.raises(ValueError, match="between 0 and 1"):
            await queue.set_progress(job, 1.5)


async def test_claim_reads_only_limit_rows_of_a_large_backlog_without_statistics(database_url):
    """A queue table's statistics lag its contents; with a low estimate the planner would
    bitmap-scan and sort every queued job on each claim. The claim must walk the available
    index in order and stop after `limit` rows, however large the backlog."""
    async with queue_pool(database_url) as pool:
        queue = JobQueue(pool)
        await queue.enqueue_many([JobSpec("k", "u1")] * 20_000)  # never analyzed
        plans: list[str] = []
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            try:
                await conn.execute("LOAD 'auto_explain'")
            except psycopg.Error:
                pytest.skip("this Postgres has no auto_explain module")
            conn.add_notice_handler(lambda diag: plans.append(diag.message_primary or ""))
            for setting in (
                "auto_explain.log_min_duration = 0",
                "auto_explain.log_analyze = on",
                "auto_explain.log_nested_statements = on",
                "client_min_messages = log",
            ):
                await conn.execute(f"SET {setting}")
            claimed = []
            for kinds in (None, ["k", "other"]):
                cursor = await conn.execute(
                    "SELECT id, attempt FROM mediajobs_claim('w', 32, 30, %s::text[])", (kinds,)
                )
                claimed += await cursor.fetchall()
            await conn.execute(
                sql.COMPLETE_MANY,
                {
                    "ids": [row[0] for row in claimed],
                    "attempts": [row[1] for row in claimed],
                    "results": [None] * len(claimed),
                },
            )
    completion = [plan for plan in plans if "SET state = 'succeeded'" in plan]
    assert len(completion) == 1, plans
    assert "jobs_pkey" in completion[0] and "Seq Scan" not in completion[0], completion[0]
    inner = [plan for plan in plans if "FOR UPDATE SKIP LOCKED" in plan]
    assert len(inner) == 2, plans
    for plan in inner:
        assert "Index Scan using jobs_available_idx" in plan, plan
        assert "Sort" not in plan and "Bitmap" not in plan and "Seq Scan" not in plan, plan
        scan = next(line for line in plan.splitlines() if "jobs_available_idx" in line)
        assert "rows=32 loops=1)" in scan, plan  # actual rows read: the limit, not 20,000
