"""Live progress over SSE, with real processes: `mediajobs serve` (uvicorn), `mediajobs
worker`, the machine's Postgres and Redis, and httpx + httpx-sse as the client."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import psycopg
import pytest
import redis

from mediajobs.queue import JobQueue, JobSpec
from mediajobs.queue.listener import LISTENER_APPLICATION_NAME
from tests.conftest import free_port
from tests.support.redis_server import start_redis_server
from tests.support.serving import Serving
from tests.support.sse import (
    bearer,
    event_ids,
    follow,
    following,
    metric,
    realtime_env,
    terminal_of,
    watch_job,
)
from tests.support.workers import WorkerProcess, queue_pool, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

STEPS_KIND = "test.steps"


@contextlib.asynccontextmanager
async def worker(database_url: str, env: dict[str, str]) -> AsyncIterator[WorkerProcess]:
    """A `mediajobs worker` process, stopped with SIGTERM after the block (once it is up:
    a process still importing would die of the signal instead of draining)."""
    proc = WorkerProcess(database_url, env=env)
    try:
        yield proc
    finally:
        await wait_for(lambda: listening(database_url), timeout=30, interval=0.1)
        code = await proc.stop()
        assert code == 0, proc.stderr[-3000:]


def listening(database_url: str) -> bool:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s "
            "AND datname = current_database()",
            (LISTENER_APPLICATION_NAME,),
        ).fetchone()
    return bool(row and row[0])


async def enqueue(database_url: str, owner: str, **payload: object) -> uuid.UUID:
    async with queue_pool(database_url, max_size=2) as pool:
        enqueued = await JobQueue(pool).enqueue(JobSpec(STEPS_KIND, owner, payload))
    return enqueued.id


def job_state(database_url: str, job_id: uuid.UUID) -> str:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT state::text FROM jobs WHERE id = %s", (job_id,)).fetchone()
    assert row is not None
    return str(row[0])


def expected_types(steps: int) -> list[str]:
    return ["job_started", *["job_progress"] * steps, "job_complete"]


async def test_a_client_that_drops_mid_job_resumes_with_last_event_id_without_gap_or_duplicate(
    database_url, redis_url, tmp_path
):
    env = realtime_env(database_url, redis_url)
    hold = tmp_path / "go-on"
    with Serving(env) as api:
        async with worker(database_url, env), httpx.AsyncClient(timeout=30) as client:
            reading = await following(
                client, f"{api.base}/events", count=8, headers=bearer("alice")
            )
            job = await enqueue(
                database_url, "alice", steps=30, delay=0.04, hold_at=15, hold_file=str(hold)
            )
            first = await reading
            # Away while the job publishes up to its hold (started + 15 reports)...
            await wait_for(lambda: len(event_ids(database_url, job)) >= 16, timeout=30)
            missed = event_ids(database_url, job)[-1]
            headers = {**bearer("alice"), "Last-Event-ID": str(first.ids[-1])}
            resumed = await following(
                client, f"{api.base}/events", stop=terminal_of(job), headers=headers
            )
            hold.touch()  # ...then back, and the rest of the job happens while connected
            second = await resumed
    received = first.ids + second.ids
    assert received == event_ids(database_url, job)
    assert first.types + second.types == expected_types(30)
    assert len(second.ids) > 10  # some arrived from history, the rest live
    assert [i for i in second.ids if i <= missed]  # from history
    assert [i for i in second.ids if i > missed]  # live
    progress = [d["progress"] for d in first.data() + second.data() if "progress" in d]
    assert progress == sorted(progress) and progress[-1] == 1.0
    assert second.data()[-1]["result"] == {"steps": 30}


async def test_two_users_only_ever_see_their_own_events(database_url, redis_url):
    env = realtime_env(database_url, redis_url)
    with Serving(env) as api:
        async with worker(database_url, env), httpx.AsyncClient(timeout=30) as client:
            watches = {user: await watch_job(client, api.base, user) for user in ("alice", "bob")}
            for user, watch in watches.items():
                watch.job = await enqueue(database_url, user, steps=5, delay=0.02)
            jobs = {user: watch.job for user, watch in watches.items()}
            alice, bob = await asyncio.gather(*(watch.stream for watch in watches.values()))
            alice_seen = [d["jobId"] for d in alice.data()]
            bob_seen = [d["jobId"] for d in bob.data()]
            assert alice_seen and set(alice_seen) == {str(jobs["alice"])}
            assert bob_seen and set(bob_seen) == {str(jobs["bob"])}

            # Bob cannot follow Alice's job, nor replay her history.
            other = await client.get(
                f"{api.base}/jobs/{jobs['alice']}/events", headers=bearer("bob")
            )
            assert other.status_code == 404
            assert other.json()["error"]["code"] == "job_not_found"
            replay = await follow(
                client,
                f"{api.base}/events",
                stop=terminal_of(jobs["bob"]),
                headers={**bearer("bob"), "Last-Event-ID": "0"},
            )
            assert {d["jobId"] for d in replay.data()} == {str(jobs["bob"])}
            assert replay.ids == event_ids(database_url, jobs["bob"])


async def test_two_api_processes_both_deliver_every_event(database_url, redis_url):
    env = realtime_env(database_url, redis_url)
    with Serving(env) as one, Serving(env) as two:
        async with worker(database_url, env), httpx.AsyncClient(timeout=30) as client:
            watches = [await watch_job(client, base, "alice") for base in (one.base, two.base)]
            job = await enqueue(database_url, "alice", steps=10, delay=0.02)
            for watch in watches:
                watch.job = job
            streams = await asyncio.gather(*(watch.stream for watch in watches))
    expected = event_ids(database_url, job)
    assert [stream.ids for stream in streams] == [expected, expected]


async def test_killing_the_pubsub_connections_mid_job_loses_no_event(
    database_url, redis_url, tmp_path
):
    env = realtime_env(database_url, redis_url)
    hold = tmp_path / "go-on"
    with Serving(env) as api:
        async with worker(database_url, env), httpx.AsyncClient(timeout=30) as client:
            watch = await watch_job(client, api.base, "alice")
            watch.job = await enqueue(
                database_url, "alice", steps=40, delay=0.04, hold_at=10, hold_file=str(hold)
            )
            # Mid-job: started and 10 reports have arrived, 30 are still to come.
            await wait_for(lambda: len(watch.received.events) >= 11, timeout=30)
            killed = redis.Redis.from_url(redis_url).client_kill_filter(_type="pubsub")
            assert killed >= 1
            hold.touch()
            stream = await watch.stream
            metrics = (await client.get(f"{api.base}/metrics")).text
    assert stream.ids == event_ids(database_url, watch.job)
    assert stream.types == expected_types(40)
    assert metric(metrics, "mediajobs_hub_redis_reconnects_total") >= 1


@contextlib.contextmanager
def private_redis(port: int) -> Iterator[subprocess.Popen[bytes]]:
    proc = start_redis_server(port)
    try:
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def test_restarting_redis_mid_job_loses_no_event_and_fails_no_job(database_url, tmp_path):
    port = free_port()
    hold = tmp_path / "go-on"
    with private_redis(port) as first:
        env = realtime_env(database_url, f"redis://127.0.0.1:{port}/0")
        with Serving(env) as api:
            async with worker(database_url, env), httpx.AsyncClient(timeout=30) as client:
                watch = await watch_job(client, api.base, "alice")
                watch.job = await enqueue(
                    database_url, "alice", steps=50, delay=0.04, hold_at=10, hold_file=str(hold)
                )
                # Mid-job: started and 10 reports have arrived, 40 are still to come.
                await wait_for(lambda: len(watch.received.events) >= 11, timeout=30)
                first.terminate()
                await asyncio.to_thread(first.wait, 10)
                hold.touch()
                # Events published now reach no one through Redis: 10 more, at least.
                await wait_for(lambda: len(event_ids(database_url, watch.job)) >= 21, timeout=30)
                second = start_redis_server(port)
                try:
                    stream = await watch.stream
                finally:
                    second.terminate()
                    second.wait(timeout=10)
    assert stream.ids == event_ids(database_url, watch.job)
    assert stream.types == expected_types(50)
    assert job_state(database_url, watch.job) == "succeeded"


async def test_a_slow_consumer_is_disconnected_while_the_others_get_everything(
    database_url, redis_url
):
    env = realtime_env(
        database_url, redis_url, MEDIAJOBS_SSE_BUFFER="16", MEDIAJOBS_SSE_SEND_TIMEOUT="1"
    )
    with Serving(env) as api:
        # A client that never reads, with a tiny receive window.
        slow = socket.socket()
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.connect(("127.0.0.1", api.port))
        token = bearer("alice")["Authorization"]
        slow.sendall(f"GET /events HTTP/1.1\r\nHost: x\r\nAuthorization: {token}\r\n\r\n".encode())
        async with worker(database_url, env), httpx.AsyncClient(timeout=60) as client:
            watch = await watch_job(client, api.base, "alice")
            watch.job = await enqueue(database_url, "alice", steps=1200, pad=8000)
            stream = await asyncio.wait_for(watch.stream, 60)
            # The server closes the slow client's connection (maybe a moment after the
            # fast stream ended): reading it to the end finishes. Only then count drops.
            slow.settimeout(20)
            while await asyncio.to_thread(slow.recv, 65536):
                pass
            slow.close()
            metrics = (await client.get(f"{api.base}/metrics")).text
        dropped = metric(metrics, 'mediajobs_sse_clients_dropped_total{reason="slow"}', 0) + metric(
            metrics, 'mediajobs_sse_clients_dropped_total{reason="stalled"}', 0
        )
    assert stream.ids == event_ids(database_url, watch.job)
    assert len(stream.ids) == 1202
    assert dropped == 1


async def test_an_expired_ticket_ends_the_stream_and_a_new_one_resumes(database_url, redis_url):
    env = realtime_env(database_url, redis_url, MEDIAJOBS_STREAM_TICKET_TTL="2")
    with Serving(env) as api:
        async with worker(database_url, env), httpx.AsyncClient(timeout=30) as client:
            issued = await client.post(f"{api.base}/events/ticket", headers=bearer("alice"))
            assert issued.status_code == 200
            ticket = issued.json()["ticket"]
            started = time.monotonic()
            first = await follow(client, f"{api.base}/events?ticket={ticket}", timeout=10)
            assert first.ended and first.types[-1] == "stream_expired"
            assert 0.5 < time.monotonic() - started < 5

            again = await client.get(f"{api.base}/events?ticket={ticket}")
            assert again.status_code == 401
            assert again.json()["error"]["code"] == "ticket_expired"

            job = await enqueue(database_url, "alice", steps=3)  # happens while disconnected
            fresh = (await client.post(f"{api.base}/events/ticket", headers=bearer("alice"))).json()
            resumed = await follow(
                client,
                f"{api.base}/events?ticket={fresh['ticket']}&lastEventId=0",
                stop=terminal_of(job),
            )
            assert resumed.ids == event_ids(database_url, job)

            # A ticket is not a bearer token, and a bearer token is not a ticket.
            as_bearer = await client.get(
                f"{api.base}/events", headers={"Authorization": f"Bearer {fresh['ticket']}"}
            )
            assert as_bearer.status_code == 401
            token = bearer("alice")["Authorization"].split()[1]
            as_ticket = await client.get(f"{api.base}/events?ticket={token}")
            assert as_ticket.json()["error"]["code"] == "invalid_ticket"
    assert ticket not in api.output and fresh["ticket"] not in api.output
    assert "ticket=REDACTED" in api.output


async def test_stream_protocol_headers_heartbeat_job_streams_and_resync(database_url, redis_url):
    env = realtime_env(database_url, redis_url, MEDIAJOBS_SSE_HEARTBEAT="0.3")
    with Serving(env) as api:
        async with worker(database_url, env), httpx.AsyncClient(timeout=30) as client:
            unauthenticated = await client.get(f"{api.base}/events")
            assert unauthenticated.status_code == 401
            assert unauthenticated.headers["www-authenticate"] == 'Bearer realm="mediajobs"'
            assert unauthenticated.json()["error"]["code"] == "missing_credentials"
            bad_id = await client.get(
                f"{api.base}/events", headers={**bearer("alice"), "Last-Event-ID": "abc"}
            )
            assert bad_id.status_code == 400

            lines: list[str] = []
            async with client.stream(
                "GET", f"{api.base}/events", headers=bearer("alice")
            ) as response:
                assert response.headers["content-type"].startswith("text/event-stream")
                assert response.headers["x-accel-buffering"] == "no"
                assert response.headers["cache-control"].startswith("no-cache")
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        async for line in response.aiter_lines():
                            lines.append(line)
            assert lines[0] == "retry: 3000"
            assert lines.count(": ping") >= 2

            # A job stream replays from the job's first event and ends after its last.
            job = await enqueue(database_url, "alice", steps=4)
            stream = await follow(client, f"{api.base}/jobs/{job}/events", headers=bearer("alice"))
            assert stream.ended
            assert stream.types == expected_types(4)
            assert stream.ids == event_ids(database_url, job)
            missing = await client.get(
                f"{api.base}/jobs/{uuid.uuid4()}/events", headers=bearer("alice")
            )
            assert missing.status_code == 404

            # Resuming from an id that retention pruned: resync, then live from there.
            with psycopg.connect(database_url, autocommit=True) as conn:
                conn.execute(
                    "UPDATE job_events_retention SET pruned_through = %s", (stream.ids[2],)
                )
            resync = await follow(
                client,
                f"{api.base}/events",
                count=1,
                headers={**bearer("alice"), "Last-Event-ID": str(stream.ids[0])},
            )
            assert resync.types == ["resync"]
            assert resync.data()[0]["reason"] == "history_expired"
            assert resync.ids == [stream.ids[-1]]
