"""JobQueue against the real Postgres: the queue contract (tests/contract/queue_contract.py,
which InMemoryQueue also passes), and what only Postgres does: the caller's transaction,
NOTIFY on commit, the maintenance lock between processes, the claim's query plan."""

from __future__ import annotations

from collections.abc import AsyncIterator

import psycopg
import pytest

from mediajobs.db import Pool
from mediajobs.queue import JobQueue, JobSpec, JobState, sql
from mediajobs.queue.listener import NotificationListener
from tests.contract.queue_contract import QueueContract, RecordingHooks
from tests.support.workers import queue_pool


class PostgresHarness:
    """The contract's harness for ``JobQueue``: time passes by moving every timestamp of
    the queue's tables back."""

    def __init__(self, pool: Pool, database_url: str) -> None:
        self.hooks = RecordingHooks()
        self.queue = JobQueue(pool, hooks=self.hooks)
        self._pool = pool
        self._database_url = database_url

    async def pass_time(self, seconds: float) -> None:
        shift = "{column} = {column} - make_interval(secs => %(s)s)"
        columns = (
            "run_at", "lease_expires_at", "created_at", "updated_at", "started_at", "finished_at",
        )  # fmt: skip
        moved = ", ".join(shift.format(column=column) for column in columns)
        async with self._pool.connection() as conn, conn.transaction():
            for table in ("jobs", "jobs_archive"):
                await conn.execute(f"UPDATE {table} SET {moved}", {"s": seconds})
            await conn.execute(
                f"UPDATE job_keys SET {shift.format(column='created_at')}", {"s": seconds}
            )

    def notifier(self) -> NotificationListener:
        return NotificationListener(self._database_url)


class TestJobQueue(QueueContract):
    @pytest.fixture
    async def harness(self, database_url: str) -> AsyncIterator[PostgresHarness]:
        async with queue_pool(database_url, max_size=10) as pool:
            yield PostgresHarness(pool, database_url)


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
        # jobs_available_idx, or (a claim without ingest.batch) its ingest-free twin
        assert "Index Scan using jobs_available_" in plan, plan
        assert "Sort" not in plan and "Bitmap" not in plan and "Seq Scan" not in plan, plan
        scan = next(line for line in plan.splitlines() if "Index Scan using jobs_available" in line)
        assert "rows=32 loops=1)" in scan, plan  # actual rows read: the limit, not 20,000


async def test_a_claim_for_other_kinds_never_walks_an_ingest_backlog(database_url):
    """Ingest batches (priority -10) queue behind every other kind; a claim that does not
    ask for them must not read them to find out there is nothing else (migration 0008's
    jobs_available_interactive_idx). Counted as heap rows fetched through indexes."""
    async with queue_pool(database_url) as pool:
        queue = JobQueue(pool)
        await queue.enqueue_many([JobSpec("ingest.batch", "u1", priority=-10)] * 3000)
        await queue.enqueue(JobSpec("media.process", "u1"))

        async def claim(kinds: list[str] | None, limit: int) -> tuple[int, int]:
            async with pool.connection() as conn, conn.transaction():
                claimed = await (
                    await conn.execute(
                        "SELECT id FROM mediajobs_claim('w', %s, 30, %s::text[])", (limit, kinds)
                    )
                ).fetchall()
                stats = await (
                    await conn.execute(
                        "SELECT idx_tup_fetch FROM pg_stat_xact_user_tables WHERE relname = 'jobs'"
                    )
                ).fetchone()
                assert stats is not None
                return len(claimed), stats["idx_tup_fetch"]

        got, fetched = await claim(["media.process", "system.ping"], 8)
        assert got == 1 and fetched < 50  # the old plan fetched all 3,000
        got, fetched = await claim(["media.process", "system.ping"], 8)
        assert got == 0 and fetched < 50
        got, fetched = await claim(["ingest.batch"], 2)
        assert got == 2 and fetched < 50
