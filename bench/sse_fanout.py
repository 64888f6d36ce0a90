"""SSE fan-out: N concurrent clients on ONE API process, events published at a set rate;
our SSE response against sse-starlette's ``EventSourceResponse`` in the same run.

    python bench/sse_fanout.py [--clients 2000] [--users 1000] [--rate 500] [--seconds 20]
                               [--idle 10000] [--systems mediajobs,sse-starlette]

For each system in turn (same clients, same events, same database and Redis):
1. Starts the API process on the machine's Postgres and Redis: `mediajobs serve`, or
   bench/sse_peer.py (the same app and server with `/events` answered by sse-starlette).
2. Live: opens --clients SSE connections, spread evenly over --users users (each user's
   events go to every one of that user's connections), from --client-procs client
   processes. Then publishes --rate events/s for --seconds through the real path: each
   event is a row written in its own transaction, then published to Redis. Each client
   counts what it receives and the latency from just before the event's transaction to its
   arrival (the event carries the time; clients and publisher share the clock).
   Prints delivered/expected (must be 100%) and latency p50/p99.
3. Idle: opens --idle connections (after the live ones are closed) and holds them; prints
   the API process's RSS growth per connection (VmRSS before and after, from /proc).

Ends with one JSON line of the figures: ours unprefixed, the peer's as
``sse_starlette_<figure>``, and ``ratio_vs_sse_starlette_<figure>`` (ours / the peer's).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import resource
import signal
import socket
import subprocess
import sys
import time
import uuid
from typing import Any

import httpx

from common import (
    DEFAULT_DSN,
    REPO,
    drop_database,
    fresh_database,
    percentile,
    record,
    start_serve,
)

SECRET = "bench-secret-" + "b" * 40
CONNECT_CONCURRENCY = 200


# -- the API process ---------------------------------------------------------------------


SYSTEMS = {
    "mediajobs": None,  # `mediajobs serve`
    "sse-starlette": [sys.executable, str(REPO / "bench" / "sse_peer.py")],
}


def start_api(
    system: str, dsn: str, redis_url: str, channel: str, port: int
) -> subprocess.Popen[bytes]:
    return start_serve(
        dsn,
        redis_url,
        port,
        SECRET,
        command=SYSTEMS[system],
        MEDIAJOBS_EVENTS_CHANNEL=channel,
        MEDIAJOBS_STREAMS_PER_USER="1000",  # the warm-up opens 50 streams of one user
    )


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def streams_open(port: int) -> int:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith("mediajobs_sse_clients "):
            return int(float(line.split()[1]))
    return 0


# -- clients (in child processes) --------------------------------------------------------


def token(user: str) -> str:
    from mediajobs.service.auth import Authenticator

    return Authenticator(SECRET).issue_token(user, ttl=3600)


async def open_stream(port: int, user_token: str) -> tuple[asyncio.StreamReader, Any]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    request = f"GET /events HTTP/1.0\r\nHost: bench\r\nAuthorization: Bearer {user_token}\r\n\r\n"
    writer.write(request.encode())
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(head.decode(errors="replace"))
    await reader.readuntil(b"\n\n")  # the retry: hint, written after registration
    return reader, writer


async def consume(reader: asyncio.StreamReader, seen: set[int], latencies: list[float]) -> None:
    """Parse frames until the server closes; record each event's publish-to-receive time."""
    while True:
        try:
            frame = await reader.readuntil(b"\n\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        now = time.time()
        if frame.startswith(b":"):
            continue
        event_id = None
        for line in frame.split(b"\n"):
            if line.startswith(b"id: "):
                event_id = int(line[4:])
            elif line.startswith(b"data: "):
                latencies.append(now - float(json.loads(line[6:])["message"]))
        if event_id is not None:
            seen.add(event_id)


async def client_main(port: int, users: list[str], conn: Any) -> None:
    """Open one stream per entry of ``users``; report "ready"; consume until told to stop;
    send back per-user delivered counts and latencies."""
    tokens = {user: token(user) for user in set(users)}
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    streams: list[tuple[str, asyncio.StreamReader, Any]] = []

    async def connect(user: str) -> None:
        async with gate:
            reader, writer = await open_stream(port, tokens[user])
        streams.append((user, reader, writer))

    await asyncio.gather(*(connect(user) for user in users))
    seen: list[set[int]] = [set() for _ in streams]
    latencies: list[float] = []
    tasks = [
        asyncio.create_task(consume(reader, seen[i], latencies))
        for i, (_, reader, _) in enumerate(streams)
    ]
    loop = asyncio.get_running_loop()
    conn.send("ready")
    await loop.run_in_executor(None, conn.recv)  # "stop"
    await asyncio.sleep(0)
    for task in tasks:
        task.cancel()
    for _, _, writer in streams:
        writer.close()
    delivered: dict[str, int] = {}
    for (user, _, _), ids in zip(streams, seen, strict=True):
        delivered[user] = delivered.get(user, 0) + len(ids)
    conn.send({"delivered": delivered, "latencies": latencies})


def client_process(port: int, users: list[str], conn: Any) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (20000, 20000))
    asyncio.run(client_main(port, users, conn))


# -- publishing --------------------------------------------------------------------------


async def publish(
    dsn: str, redis_url: str, channel: str, users: list[str], rate: float, seconds: float
) -> dict[str, int]:
    """Publish ``rate`` events/s round-robin over ``users``, through the real path (row in
    a transaction, then Redis). Returns the events sent per user."""
    from redis.asyncio import Redis

    from mediajobs.db import open_pool
    from mediajobs.queue.models import Cause, JobState, Transition
    from mediajobs.realtime import EventRecorder, RedisPublisher

    sent: dict[str, int] = dict.fromkeys(users, 0)
    pool = await open_pool(dsn, name="bench", min_size=4, max_size=8)
    redis = Redis.from_url(redis_url)
    recorder = EventRecorder(RedisPublisher(redis, channel))
    total = int(rate * seconds)
    loop = asyncio.get_running_loop()
    start = loop.time()
    inflight: set[asyncio.Task[None]] = set()

    async def one(i: int) -> None:
        user = users[i % len(users)]
        # The time rides in the message, as the client's latency reference: taken before
        # the transaction, so the figure covers commit + publish + fan-out + delivery.
        transition = Transition(
            uuid.uuid4(), user, "bench", JobState.RUNNING, 1, Cause.PROGRESS,
            progress=0.5, message=repr(time.time()),
        )  # fmt: skip
        async with pool.connection() as conn, conn.transaction():
            recorded = await recorder.record(conn, [transition])
        await recorder.committed(recorded)
        sent[user] += 1

    for i in range(total):
        due = start + i / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(i))
        inflight.add(task)
        task.add_done_callback(inflight.discard)
    await asyncio.gather(*inflight)
    achieved = total / (loop.time() - start)
    await redis.aclose()
    await pool.close()
    sent["__rate__"] = int(achieved)
    return sent


# -- the run -----------------------------------------------------------------------------


def spawn_clients(port: int, users: list[str], procs: int) -> list[tuple[Any, Any]]:
    ctx = multiprocessing.get_context("spawn")
    children = []
    for k in range(procs):
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=client_process, args=(port, users[k::procs], child))
        proc.start()
        children.append((proc, parent))
    for _, parent in children:
        if parent.recv() != "ready":
            raise RuntimeError("a client process failed")
    return children


def live_run(args: argparse.Namespace, dsn: str, channel: str, port: int) -> dict[str, Any]:
    users = [f"user{i}" for i in range(args.users)]
    connections = [users[i % len(users)] for i in range(args.clients)]
    children = spawn_clients(port, connections, args.client_procs)
    assert streams_open(port) == args.clients
    sent = asyncio.run(publish(dsn, args.redis_url, channel, users, args.rate, args.seconds))
    achieved = sent.pop("__rate__")
    time.sleep(2.0)  # let the last events land
    delivered: dict[str, int] = {}
    latencies: list[float] = []
    for proc, parent in children:
        parent.send("stop")
        report = parent.recv()
        proc.join(timeout=30)
        for user, n in report["delivered"].items():
            delivered[user] = delivered.get(user, 0) + n
        latencies.extend(report["latencies"])
    per_user = {user: connections.count(user) for user in users}
    expected = sum(sent[user] * per_user[user] for user in users)
    got = sum(delivered.values())
    return {
        "clients": args.clients,
        "users": args.users,
        "rate": args.rate,
        "rate_achieved": achieved,
        "deliveries_per_s": round(expected / args.seconds),
        "expected": expected,
        "delivered": got,
        "delivered_pct": round(100.0 * got / expected, 3) if expected else 0.0,
        "latency_p50_ms": round(percentile(latencies, 0.50) * 1000, 2),
        "latency_p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
        "latency_max_ms": round(max(latencies) * 1000, 2),
    }


def idle_run(args: argparse.Namespace, pid: int, port: int) -> dict[str, Any]:
    # Warm the process up with a few streams first, so the figure is per connection, not
    # the first-use cost of the code paths.
    warm = spawn_clients(port, ["warm"] * 50, 1)
    time.sleep(1.0)
    before = rss_kib(pid)
    users = [f"idle{i % 1000}" for i in range(args.idle)]
    children = spawn_clients(port, users, args.client_procs)
    held = streams_open(port) - 50
    time.sleep(2.0)
    after = rss_kib(pid)
    for proc, parent in children + warm:
        parent.send("stop")
        parent.recv()
        proc.join(timeout=30)
    return {
        "idle_connections": held,
        "rss_before_mib": round(before / 1024, 1),
        "rss_after_mib": round(after / 1024, 1),
        "rss_per_idle_connection_kib": round((after - before) / max(1, held), 2),
    }


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run_system(system: str, args: argparse.Namespace, dsn: str, channel: str) -> dict[str, Any]:
    """The live and idle runs against one system's API process."""
    port = free_port()
    api = start_api(system, dsn, args.redis_url, channel, port)
    figures: dict[str, Any] = {}
    try:
        if args.clients:
            figures.update(live_run(args, dsn, channel, port))
            print(f"{system} live: {figures}", file=sys.stderr)
        if args.idle:
            deadline = time.monotonic() + 30
            while streams_open(port) and time.monotonic() < deadline:
                time.sleep(0.2)
            figures.update(idle_run(args, api.pid, port))
            print(f"{system}: {figures}", file=sys.stderr)
    finally:
        api.send_signal(signal.SIGTERM)
        api.wait(timeout=60)
    return figures


# Figures compared with the peer (lower is better for each).
COMPARED = ("latency_p50_ms", "latency_p99_ms", "rss_per_idle_connection_kib")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=2000)
    parser.add_argument("--users", type=int, default=1000, help="clients are spread over these")
    parser.add_argument("--rate", type=float, default=500.0, help="events published per second")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--idle", type=int, default=10000, help="idle connections to hold")
    parser.add_argument("--client-procs", type=int, default=2)
    parser.add_argument(
        "--systems",
        default=",".join(SYSTEMS),
        help=f"comma-separated, in order, from: {', '.join(SYSTEMS)}",
    )
    parser.add_argument("--database-url", default=DEFAULT_DSN, help="an admin connection")
    parser.add_argument(
        "--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    parser.add_argument("--no-record", action="store_true", help="do not append to docs/")
    args = parser.parse_args()
    systems = [name.strip() for name in args.systems.split(",") if name.strip()]
    unknown = [name for name in systems if name not in SYSTEMS]
    if unknown or not systems:
        parser.error(f"--systems: unknown {unknown}; choose from {', '.join(SYSTEMS)}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (20000, 20000))

    name, dsn = fresh_database(args.database_url, "sse")
    channel = f"bench:events:{uuid.uuid4().hex}"
    results: dict[str, dict[str, Any]] = {}
    try:
        from mediajobs.db import migrate

        asyncio.run(migrate(dsn))
        for system in systems:
            results[system] = run_system(system, args, dsn, channel)
    finally:
        drop_database(args.database_url, name)

    figures: dict[str, Any] = dict(results.get("mediajobs", {}))
    peer = results.get("sse-starlette", {})
    figures.update({f"sse_starlette_{key}": value for key, value in peer.items()})
    if "mediajobs" in results and peer:
        for key in COMPARED:
            if key in figures and peer.get(key):
                figures[f"ratio_vs_sse_starlette_{key.removesuffix('_ms')}"] = round(
                    figures[key] / peer[key], 3
                )
    rows = ["| figure | mediajobs | sse-starlette |", "|---|---:|---:|"]
    keys = list(dict.fromkeys([*results.get("mediajobs", {}), *peer]))
    rows += [
        f"| {key} | {results.get('mediajobs', {}).get(key, '')} | {peer.get(key, '')} |"
        for key in keys
    ]
    rows += [f"| {key} | {value} | |" for key, value in figures.items() if key.startswith("ratio")]
    table = "\n".join(rows)
    print(table)
    if not args.no_record:
        record("SSE fan-out", table, "python bench/sse_fanout.py " + " ".join(sys.argv[1:]))
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
