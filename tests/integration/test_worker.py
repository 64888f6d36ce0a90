"""The worker runtime against the real Postgres, in this process and as real processes."""

from __future__ import annotations

import asyncio
import collections
import itertools
import signal
import threading
import time
from pathlib import Path

import psycopg
import pytest

from mediajobs.errors import JobFailed, Retry
from mediajobs.queue import (
    Backoff,
    HandlerRegistry,
    Job,
    JobContext,
    JobQueue,
    JobSpec,
    JobState,
    Worker,
    WorkerOptions,
    kinds,
)
from mediajobs.queue.listener import LISTENER_APPLICATION_NAME
from tests.support.workers import (
    queue_pool,
    read_lines,
    running_worker,
    start_worker_process,
    wait_for,
)


def sleepy(log: Path, first_attempt_seconds: float) -> JobSpec:
    """A `test.sleepy` job (tests/support/handlers.py) logging to ``log``."""
    payload = {"log": str(log), "first_attempt_seconds": first_attempt_seconds}
    return JobSpec("test.sleepy", "u", payload)


async def job_state(queue: JobQueue, job_id) -> Job:
    job = await queue.get(job_id)
    assert job is not None
    return job


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_eight_worker_processes_run_each_of_5000_jobs_exactly_once(database_url, tmp_path):
    log = tmp_path / "runs.log"
    async with queue_pool(database_url) as pool:
        queue = JobQueue(pool)
        ids = await queue.enqueue_many(
            JobSpec("test.record", "u", {"log": str(log)}) for _ in range(5000)
        )
        workers = [
            start_worker_process(
                database_url, "--burst", "--concurrency", "16", "--kinds", "test.record"
            )
            for _ in range(8)
        ]
        codes = [await worker.finish(timeout=150) for worker in workers]
        assert codes == [0] * 8, [worker.stderr[-2000:] for worker in workers]
        stats = [worker.stats for worker in workers]

        runs = collections.Counter(line.split()[0] for line in read_lines(log))
        assert len(runs) == 5000
        assert set(runs.values()) == {1}
        assert set(runs) == {str(job_id) for job_id in ids}
        assert sum(s["succeeded"] for s in stats) == 5000
        assert sum(1 for s in stats if s["claimed"] > 0) >= 2  # the work was shared
        counts = await queue.counts()
        assert counts[JobState.SUCCEEDED] == 5000
        async with pool.connection() as conn:
            row = await (await conn.execute("SELECT max(attempt) AS a FROM jobs")).fetchone()
        assert row is not None and row["a"] == 1


@pytest.mark.slow
async def test_job_of_a_sigkilled_worker_is_finished_by_another_after_lease_expiry(
    database_url, tmp_path
):
    log = tmp_path / "sleepy.log"
    async with queue_pool(database_url) as pool:
        queue = JobQueue(pool)
        enqueued = await queue.enqueue(sleepy(log, 120))
        doomed = start_worker_process(database_url, env={"MEDIAJOBS_LEASE_SECONDS": "2"})
        await wait_for(lambda: any(line.startswith("start") for line in read_lines(log)), 30)
        first_attempt = await job_state(queue, enqueued.id)
        assert first_attempt.state is JobState.RUNNING and first_attempt.attempt == 1
        assert await doomed.stop(signal.SIGKILL) == -signal.SIGKILL
        killed_at = time.monotonic()

        rescuer = start_worker_process(database_url, env={"MEDIAJOBS_LEASE_SECONDS": "2"})
        try:
            await wait_for(lambda: _finished(queue, enqueued.id), timeout=30, interval=0.05)
        finally:
            assert await rescuer.stop() == 0, rescuer.stderr[-2000:]
        recovered_after = time.monotonic() - killed_at
        job = await job_state(queue, enqueued.id)
        assert (job.state, job.attempt, job.result) == (JobState.SUCCEEDED, 2, {"attempt": 2})
        assert recovered_after < 10  # lease 2s + sweep, not an operator's timeout
        assert [line.split()[0] for line in read_lines(log)] == ["start", "start", "done"]

        # The dead worker's late `complete` for attempt 1 is refused by fencing.
        assert not await queue.complete(first_attempt, {"attempt": 1})
        assert (await job_state(queue, enqueued.id)).result == {"attempt": 2}


async def _finished(queue: JobQueue, job_id) -> bool:
    job = await queue.get(job_id)
    return job is not None and job.state.finished


async def test_retryable_errors_back_off_then_succeed(database_url):
    starts: list[float] = []

    async def flaky(ctx: JobContext, job: Job) -> object:
        starts.append(time.monotonic())
        if job.attempt == 1:
            raise Retry("upstream said 503", code="upstream_unavailable")  # default backoff
        if job.attempt == 2:
            raise Retry("rate limited", delay=0.6)  # explicit delay
        return {"attempts": job.attempt}

    registry = HandlerRegistry()
    registry.register("flaky", flaky)
    async with queue_pool(database_url) as pool:
        queue = JobQueue(pool)
        backoff = Backoff(base=0.4, cap=5, jitter=0.0)
        enqueued = await queue.enqueue(JobSpec("flaky", "u", max_attempts=5))
        worker_options = {"poll_interval": 0.05, "lease": 5.0}
        async with running_worker(queue, registry, database_url, **worker_options) as worker:
            worker._backoff = backoff
            await wait_for(lambda: _finished(queue, enqueued.id), timeout=15)
        job = await job_state(queue, enqueued.id)
        assert (job.state, job.attempt, job.result) == (JobState.SUCCEEDED, 3, {"attempts": 3})
        gaps = [b - a for a, b in itertools.pairwise(starts)]
        assert gaps[0] >= 0.4  # base * 2**0
        assert gaps[1] >= 0.6  # the handler's own delay
        assert worker.stats.retried == 2 and worker.stats.succeeded == 1


async def test_retries_stop_at_max_attempts_with_the_last_error(database_url):
    async def always_down(ctx: JobContext, job: Job) -> object:
        raise ConnectionError(f"refused on attempt {job.attempt}")

    registry = HandlerRegistry()
    registry.register("down", always_down)
    async with queue_pool(database_url) as pool:
        queue = JobQueue(pool)
        enqueued = await queue.enqueue(JobSpec("down", "u", max_attempts=3))
        async with running_worker(queue, registry, database_url, poll_interval=0.05) as worker:
            worker._backoff = Backoff(base=0.05, jitter=0.0)
            await wait_for(lambda: _finished(queue, enqueued.id), timeout=15)
        job = await job_state(queue, enqueued.id)
        assert (job.state, job.attempt) == (JobState.FAILED, 3)
        assert job.error == {
            "code": "internal_error",
            "message": "ConnectionError: refused on attempt 3",
            "retryable": True,
        }


async def test_non_retryable_failure_fails_at_once_with_its_code(database_url):
    calls = 0

    async def reject(ctx: JobContext, job: Job) -> object:
        nonlocal calls
        calls += 1
        raise JobFailed("the file is not an image", code="unsupported_type")

    registry = HandlerRegistry()
    registry.register("reject", reject)
    async with queue_pool(database_url) as pool:
        queue = JobQueue(pool)
        enqueued = await queue.enqueue(JobSpec("reject", "u", max_attempts=5))
        unstorable = await queue.enqueue(JobSpec("reject", "u", {"bad": True}))
        async with running_worker(queue, registry, database_url, poll_interval=0.05):
            await wait_for(lambda: _finished(queue, enqueued.id), timeout=10)
            await wait_for(lambda: _finished(queue, unstorable.id), timeout=10)
        job = await job_state(queue, enqueued.id)
        assert (job.state, job.attempt, calls) == (JobState.FAILED, 1, 2)
        assert job.error == {
            "code": "unsupported_type",
            "message": "the file is not an image",
            "retryable": False,
        }


async def test_result_that_is_not_json_fails_only_its_own_job(database_url):
    async def returns(ctx: JobContext, job: Job) -> object:
        return {"bytes": b"\x00"} if job.payload.get("bad") else {"ok": True}

    registry = HandlerRegistry()
    registry.register("ret", returns)
    async with queue_pool(database_url) as pool:
        queue = JobQueue(pool)
        good = await queue.enqueue_many([JobSpec("ret", "u")] * 5)
        bad = await queue.enqueue(JobSpec("ret", "u", {"bad": True}))
        async with running_worker(queue, registry, database_url, poll_interval=0.05):
            await wait_for(lambda: _finished(queue, bad.id), timeout=10)
            for job_id in good:
                await wait_for(lambda job_id=job_id: _finished(queue, job_id), timeout=10)
        assert (await job_state(queue, bad.id)).error["code"] == "invalid_result"  # type: ignore[index]
        assert {(await job_state(queue, j)).state for j in good} == {JobState.SUCCEEDED}


async def test_cancel_reaches_a_running_job_through_notify_well_before_a_heartbeat(database_url):
    started = asyncio.Event()

    async def long_task(ctx: JobContext, job: Job) -> object:
        started.set()
        for _ in range(3000):
            ctx.raise_if_cancelled()
            await asyncio.sleep(0.01)
        return "ran to the end"

    registry = HandlerRegistry()
    registry.register("long", long_task)
    async with queue_pool(database_url) as pool:
        queue = JobQueue(pool)
        queued_later = await queue.enqueue(JobSpec("long", "u", delay=3600))
        running = await queue.enqueue(JobSpec("long", "u"))
        async with running_worker(queue, registry, database_url, lease=30.0) as worker:
            await asyncio.wait_for(started.wait(), 10)
            asked = time.monotonic()
            assert await queue.cancel(running.id) is JobState.RUNNING
            await wait_for(lambda: _finished(queue, running.id), timeout=5, interval=0.01)
            reaction = time.monotonic() - asked
            assert await queue.cancel(queued_later.id) is JobState.CANCELLED
        assert (await job_state(queue, running.id)).state is JobState.CANCELLED
        assert (await job_state(queue, queued_later.id)).started_at is None  # never ran
        assert reaction < 2.0  # the heartbeat would take lease/3 = 10s
        assert worker.stats.cancelled == 1


@pytest.mark.slow
async def test_sigterm_hands_unfinished_jobs_back_for_another_worker_at_once(
    database_url, tmp_path
):
    log = tmp_path / "sleepy.log"
    async with queue_pool(database_url) as pool:
        queue = JobQueue(pool)
        enqueued = await queue.enqueue(sleepy(log, 120))
        quick = await queue.enqueue(sleepy(log, 0.3))
        stopping = start_worker_process(
            database_url, env={"MEDIAJOBS_SHUTDOWN_GRACE": "1", "MEDIAJOBS_LEASE_SECONDS": "60"}
        )
        await wait_for(lambda: sum(line.startswith("start") for line in read_lines(log)) == 2, 30)
        assert await stopping.stop() == 0, stopping.stderr[-2000:]
        stats = stopping.stats
        assert stats["handedBack"] == 1 and stats["succeeded"] == 1  # quick one finished in grace

        handed = await job_state(queue, enqueued.id)
        assert (handed.state, handed.lease_owner, handed.attempt) == (JobState.QUEUED, None, 1)
        assert (await job_state(queue, quick.id)).state is JobState.SUCCEEDED

        taken_at = time.monotonic()
        next_worker = start_worker_process(database_url, env={"MEDIAJOBS_LEASE_SECONDS": "60"})
        try:
            await wait_for(lambda: _finished(queue, enqueued.id), timeout=20)
        finally:
            assert await next_worker.stop() == 0, next_worker.stderr[-2000:]
        assert time.monotonic() - taken_at < 15  # far less than the 60s lease
        job = await job_state(queue, enqueued.id)
        assert (job.state, job.attempt) == (JobState.SUCCEEDED, 2)


async def test_jobs_are_still_picked_up_after_the_listen_connection_is_killed(database_url):
    picked: dict[str, float] = {}

    async def mark(ctx: JobContext, job: Job) -> object:
        picked[job.payload["name"]] = time.monotonic()
        return None

    registry = HandlerRegistry()
    registry.register("mark", mark)
    async with queue_pool(database_url) as pool:
        queue = JobQueue(pool)
        # A long poll interval: pickups within it prove the notification path works.
        async with running_worker(queue, registry, database_url, poll_interval=5.0) as worker:
            sent = time.monotonic()
            await queue.enqueue(JobSpec("mark", "u", {"name": "before"}))
            await wait_for(lambda: "before" in picked, timeout=5, interval=0.005)
            assert picked["before"] - sent < 1.0

            async with pool.connection() as conn:
                killed = await (
                    await conn.execute(
                        "SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity "
                        "WHERE application_name = %s AND datname = current_database()",
                        (LISTENER_APPLICATION_NAME,),
                    )
                ).fetchall()
            assert [row["ok"] for row in killed] == [True]
            await queue.enqueue(JobSpec("mark", "u", {"name": "during"}))
            await wait_for(lambda: "during" in picked, timeout=15)
            await wait_for(lambda: worker.notifier.reconnects >= 1, timeout=15)
            await asyncio.wait_for(worker.notifier.connected.wait(), 10)

            sent = time.monotonic()
            await queue.enqueue(JobSpec("mark", "u", {"name": "after"}))
            await wait_for(lambda: "after" in picked, timeout=5, interval=0.005)
            assert picked["after"] - sent < 1.0  # notifications work again


async def test_heartbeat_renews_leases_while_a_handler_blocks_the_event_loop(database_url):
    async def hog(ctx: JobContext, job: Job) -> object:
        deadline = time.monotonic() + 3.5
        while time.monotonic() < deadline:  # pure-Python CPU work on the loop: a bad handler
            sum(range(1000))
        return "done"

    registry = HandlerRegistry()
    registry.register("hog", hog)
    expired_seen: list[bool] = []
    stop = threading.Event()

    def watch() -> None:  # from another thread, since the loop is blocked
        with psycopg.connect(database_url) as conn:
            while not stop.is_set():
                row = conn.execute(
                    "SELECT lease_expires_at < now() FROM jobs WHERE state = 'running'"
                ).fetchone()
                if row is not None:
                    expired_seen.append(bool(row[0]))
                conn.commit()
                time.sleep(0.1)

    async with queue_pool(database_url) as pool:
        queue = JobQueue(pool)
        enqueued = await queue.enqueue(JobSpec("hog", "u"))
        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            async with running_worker(queue, registry, database_url, lease=1.5):
                await wait_for(lambda: _finished(queue, enqueued.id), timeout=20)
        finally:
            stop.set()
            watcher.join()
        job = await job_state(queue, enqueued.id)
        assert (job.state, job.attempt) == (JobState.SUCCEEDED, 1)
        assert len(expired_seen) >= 10  # watched through the whole 3.5 s of a 1.5 s lease
        assert not any(expired_seen)


async def test_a_worker_claims_only_the_kinds_it_handles(database_url):
    async def handled(ctx: JobContext, job: Job) -> object:
        return "mine"

    registry = HandlerRegistry()
    registry.register("mine", handled)
    async with queue_pool(database_url) as pool:
        queue = JobQueue(pool)
        foreign = await queue.enqueue(JobSpec("someone.elses", "u"))
        mine = await queue.enqueue(JobSpec("mine", "u"))
        async with running_worker(queue, registry, database_url, poll_interval=0.05):
            await wait_for(lambda: _finished(queue, mine.id), timeout=10)
        assert (await job_state(queue, foreign.id)).state is JobState.QUEUED


async def test_progress_from_a_handler_is_visible_while_it_runs(database_url):
    proceed = asyncio.Event()

    async def steps(ctx: JobContext, job: Job) -> object:
        await ctx.progress(0.5, "half way")
        await proceed.wait()
        return None

    registry = HandlerRegistry()
    registry.register("steps", steps)
    async with queue_pool(database_url) as pool:
        queue = JobQueue(pool)
        enqueued = await queue.enqueue(JobSpec("steps", "u"))
        async with running_worker(queue, registry, database_url):
            await wait_for(lambda: _progress_is(queue, enqueued.id, 0.5), timeout=10, interval=0.01)
            proceed.set()
            await wait_for(lambda: _finished(queue, enqueued.id), timeout=10)
        job = await job_state(queue, enqueued.id)
        assert (job.progress, job.message) == (1.0, None)


class _HeldClaimQueue(JobQueue):
    """A queue whose first claim that finds jobs (or, with ``hold_empty``, none) waits at a
    gate after it committed: a slow network."""

    def __init__(
        self, pool, gate: asyncio.Event, in_flight: asyncio.Event, *, hold_empty: bool = False
    ) -> None:
        super().__init__(pool)
        self.gate, self.in_flight, self.hold_empty = gate, in_flight, hold_empty

    async def claim(self, owner, limit, *, lease, kinds=None):
        jobs = await super().claim(owner, limit, lease=lease, kinds=kinds)
        if bool(jobs) != self.hold_empty and not self.in_flight.is_set():
            self.in_flight.set()
            await self.gate.wait()
        return jobs


async def test_a_notification_during_an_empty_claim_is_not_lost(database_url):
    """The claim's snapshot predates the enqueue, so it comes back empty; the wake-up that
    arrived meanwhile must send the worker to claim again, not to sleep until the poll."""

    async def done(ctx: JobContext, job: Job) -> object:
        return "ran"

    registry = HandlerRegistry()
    registry.register("rec", done)
    gate, in_flight = asyncio.Event(), asyncio.Event()
    async with queue_pool(database_url) as pool:
        queue = _HeldClaimQueue(pool, gate, in_flight, hold_empty=True)
        async with running_worker(queue, registry, database_url, poll_interval=60.0) as worker:
            await asyncio.wait_for(in_flight.wait(), timeout=10)
            hints = worker._hints
            enqueued = await queue.enqueue(JobSpec("rec", "u"))
            await wait_for(lambda: worker._hints > hints, timeout=10, interval=0.005)
            gate.set()
            await wait_for(lambda: _finished(queue, enqueued.id), timeout=5, interval=0.01)
        assert (await job_state(queue, enqueued.id)).result == "ran"


async def test_jobs_a_claim_returns_after_stop_are_handed_back_not_run(database_url):
    ran: list[object] = []

    async def record(ctx: JobContext, job: Job) -> object:
        ran.append(job.id)
        return None

    registry = HandlerRegistry()
    registry.register("rec", record)
    gate, in_flight = asyncio.Event(), asyncio.Event()
    async with queue_pool(database_url) as pool:
        queue = _HeldClaimQueue(pool, gate, in_flight)
        ids = await queue.enqueue_many([JobSpec("rec", "u")] * 5)
        worker = Worker.for_postgres(
            queue, registry, conninfo=database_url, options=WorkerOptions()
        )
        task = asyncio.create_task(worker.run())
        await asyncio.wait_for(in_flight.wait(), timeout=10)
        worker.stop()
        gate.set()
        stats = await asyncio.wait_for(task, timeout=30)
        assert ran == []
        assert (stats.claimed, stats.handed_back) == (0, 5)
        for job_id in ids:
            job = await job_state(queue, job_id)
            assert (job.state, job.lease_owner, job.attempt) == (JobState.QUEUED, None, 0)


async def _progress_is(queue: JobQueue, job_id, value: float) -> bool:
    job = await queue.get(job_id)
    return job is not None and job.progress == value and job.message == "half way"


async def test_ingest_batches_stay_within_their_limit_and_an_upload_is_picked_up_meanwhile(
    database_url,
):
    """Kind limits on Postgres: a backlog of ingest batches fills only its allowance (2 of
    4 slots), and an upload enqueued while they run is claimed and finished at once."""
    gate = asyncio.Event()
    batches_running = 0
    most = 0

    async def batch(ctx: JobContext, job: Job) -> object:
        nonlocal batches_running, most
        batches_running += 1
        most = max(most, batches_running)
        try:
            await gate.wait()
        finally:
            batches_running -= 1
        return None

    async def upload(ctx: JobContext, job: Job) -> object:
        return "processed"

    registry = HandlerRegistry()
    registry.register(kinds.INGEST_BATCH, batch)
    registry.register(kinds.MEDIA_PROCESS, upload)
    async with queue_pool(database_url) as pool:
        queue = JobQueue(pool)
        backlog = await queue.enqueue_many(
            JobSpec(kinds.INGEST_BATCH, "u", priority=kinds.INGEST_BATCH_PRIORITY)
            for _ in range(10)
        )
        async with running_worker(
            queue,
            registry,
            database_url,
            concurrency=4,
            poll_interval=60.0,  # wake-ups and freed slots only: no polling in this test
            kind_limits={kinds.INGEST_BATCH: 2},
        ):
            await wait_for(lambda: batches_running == 2, timeout=10)
            enqueued = await queue.enqueue(JobSpec(kinds.MEDIA_PROCESS, "u"))
            await wait_for(lambda: _finished(queue, enqueued.id), timeout=10, interval=0.01)
            assert (await job_state(queue, enqueued.id)).result == "processed"
            states = collections.Counter([(await job_state(queue, i)).state for i in backlog])
            assert states == {JobState.RUNNING: 2, JobState.QUEUED: 8}
            gate.set()
            for job_id in backlog:
                await wait_for(lambda job_id=job_id: _finished(queue, job_id), timeout=20)
        assert most == 2
        rows = [await job_state(queue, i) for i in backlog]
        assert {(job.state, job.attempt) for job in rows} == {(JobState.SUCCEEDED, 1)}
