"""Queue throughput and pickup latency: mediajobs against procrastinate and pgqueuer.

Same Postgres, same machine, equivalent no-op tasks, each system in a fresh database:
  1. enqueue N jobs in bulk with no worker running        -> enqueue jobs/s
  2. start W worker processes (concurrency C each), let them go idle, enqueue N jobs in
     one transaction, wait until none is left              -> drain jobs/s
  3. with the workers idle, enqueue one job at a time      -> pickup latency p50/p99
     (enqueue call -> handler start, wall clock, same machine)

    python bench/queue_throughput.py [--jobs 20000] [--workers 2] [--concurrency 32] [--rounds 3]

Every round measures every system (in a rotated order, so no system always runs first on a
warm or a busy machine); rates are the median over rounds, latency percentiles are taken
over the probes of all rounds pooled.

Prints a table, appends it with the command to docs/benchmarks.md (unless --no-record),
and ends with one JSON line of the figures; ratio_vs_<peer>_<figure> = ours / peer's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import conninfo

from common import DEFAULT_DSN, REPO, drop_database, fresh_database, percentile, record

SYSTEMS = ("mediajobs", "procrastinate", "pgqueuer")


def write_start(log: str, marker: Any) -> None:
    """What every latency-probe handler does first: record its start time."""
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{marker} {time.time():.6f}\n".encode())
    finally:
        os.close(fd)


# -- the three systems ---------------------------------------------------------------------


class Ours:
    name = "mediajobs"

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    async def __aenter__(self) -> Ours:
        from mediajobs.db import migrate, open_pool
        from mediajobs.queue import JobQueue

        await migrate(self.dsn)
        self.pool = await open_pool(self.dsn, name="bench", min_size=1, max_size=4)
        self.queue = JobQueue(self.pool)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.pool.close()

    async def enqueue_bulk(self, n: int) -> None:
        from mediajobs.queue import JobSpec

        spec = JobSpec("bench.noop", "bench")
        await self.queue.enqueue_many([spec] * n)

    async def enqueue_one(self, i: int, log: str) -> None:
        from mediajobs.queue import JobSpec

        await self.queue.enqueue(JobSpec("bench.noop", "bench", {"i": i, "log": log}))

    pending_sql = "SELECT count(*) FROM jobs WHERE state IN ('queued', 'running')"
    reset_sql = "TRUNCATE jobs"

    events = False  # record and publish job events, as `mediajobs worker` does

    @classmethod
    async def work(cls, dsn: str, concurrency: int) -> None:
        from redis.asyncio import Redis

        from mediajobs.db import open_pool
        from mediajobs.queue import HandlerRegistry, JobQueue, Worker, WorkerOptions
        from mediajobs.realtime import EventRecorder, RedisPublisher

        registry = HandlerRegistry()

        @registry.handler("bench.noop")
        async def noop(ctx: Any, job: Any) -> None:
            if "i" in job.payload:
                write_start(job.payload["log"], job.payload["i"])

        pool = await open_pool(dsn, name="bench-worker", min_size=2, max_size=concurrency + 2)
        redis = Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
        hooks = EventRecorder(RedisPublisher(redis, "bench:events")) if cls.events else None
        worker = Worker.for_postgres(
            JobQueue(pool, hooks=hooks),
            registry,
            conninfo=dsn,
            options=WorkerOptions(concurrency=concurrency, shutdown_grace=0),
        )
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, worker.stop)
        await worker.run()
        await redis.aclose()
        await pool.close()


class OursWithEvents(Ours):
    """mediajobs as production workers run it: every claim and completion also writes its
    event rows in the same transaction and publishes them to Redis. The peers emit no
    events, so the comparison with them uses plain `mediajobs`; this shows what events cost."""

    name = "mediajobs_events"
    events = True

    async def __aenter__(self) -> OursWithEvents:
        await super().__aenter__()
        return self

    reset_sql = "TRUNCATE jobs, job_events"


class Procrastinate:
    name = "procrastinate"

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    @staticmethod
    def make_app(dsn: str) -> Any:
        import procrastinate

        app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=dsn))

        @app.task(name="noop")
        async def noop(i: int | None = None, log: str | None = None) -> None:
            if i is not None and log is not None:
                write_start(log, i)

        return app, noop

    async def __aenter__(self) -> Procrastinate:
        self.app, self.task = self.make_app(self.dsn)
        self._opened = self.app.open_async()
        await self._opened.__aenter__()
        await self.app.schema_manager.apply_schema_async()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._opened.__aexit__(None, None, None)

    async def enqueue_bulk(self, n: int) -> None:
        await self.task.batch_defer_async(*({} for _ in range(n)))

    async def enqueue_one(self, i: int, log: str) -> None:
        await self.task.defer_async(i=i, log=log)

    pending_sql = "SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing')"
    reset_sql = "TRUNCATE procrastinate_jobs CASCADE"

    @staticmethod
    async def work(dsn: str, concurrency: int) -> None:
        app, _ = Procrastinate.make_app(dsn)
        async with app.open_async():
            await app.run_worker_async(concurrency=concurrency, wait=True)


class PgQueuer:
    name = "pgqueuer"

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    async def __aenter__(self) -> PgQueuer:
        import asyncpg
        from pgqueuer import AsyncpgDriver, Queries

        # pgqueuer's fastest driver (asyncpg), so the peer runs at its best.
        self.conn = await asyncpg.connect(_asyncpg_dsn(self.dsn))
        self.queries = Queries(AsyncpgDriver(self.conn))
        await self.queries.install()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.conn.close()

    async def enqueue_bulk(self, n: int) -> None:
        await self.queries.enqueue(["noop"] * n, [None] * n, [0] * n)

    async def enqueue_one(self, i: int, log: str) -> None:
        await self.queries.enqueue("noop", json.dumps({"i": i, "log": log}).encode())

    pending_sql = "SELECT count(*) FROM pgqueuer"
    reset_sql = "TRUNCATE pgqueuer"

    @staticmethod
    async def work(dsn: str, concurrency: int) -> None:
        import asyncpg
        from pgqueuer import AsyncpgDriver
        from pgqueuer import PgQueuer as App

        conn = await asyncpg.connect(_asyncpg_dsn(dsn))
        app = App(AsyncpgDriver(conn))

        @app.entrypoint("noop")
        async def noop(job: Any) -> None:
            if job.payload:
                data = json.loads(job.payload)
                write_start(data["log"], data["i"])

        # max_concurrent_tasks == batch_size stalls pgqueuer 1.6 here; twice the batch
        # lets it run (and favours it: it may hold 2x the jobs ours does).
        await app.run(batch_size=concurrency, max_concurrent_tasks=concurrency * 2)


def _asyncpg_dsn(dsn: str) -> str:
    params = conninfo.conninfo_to_dict(dsn)
    user, host = params.get("user", "postgres"), params.get("host", "127.0.0.1")
    return f"postgresql://{user}@{host}:{params.get('port', 5432)}/{params['dbname']}"


ADAPTERS: dict[str, Any] = {
    "mediajobs": Ours,
    "mediajobs_events": OursWithEvents,
    "procrastinate": Procrastinate,
    "pgqueuer": PgQueuer,
}


# -- measuring -----------------------------------------------------------------------------


async def pending(dsn: str, statement: str) -> int:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        row = await (await conn.execute(statement)).fetchone()
    return int(row[0]) if row else 0


async def wait_drained(dsn: str, statement: str, timeout: float) -> float:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            row = await (await conn.execute(statement)).fetchone()
            if row and row[0] == 0:
                return time.perf_counter()
            await asyncio.sleep(0.005)
    raise TimeoutError("the queue did not drain in time")


def start_workers(
    system: str, dsn: str, workers: int, concurrency: int
) -> list[subprocess.Popen[bytes]]:
    return [
        subprocess.Popen(
            [sys.executable, __file__, "_worker", system, dsn, str(concurrency)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": str(REPO / "src")},
        )
        for _ in range(workers)
    ]


def stop_workers(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def measure(system: str, dsn: str, args: argparse.Namespace) -> Round:
    adapter = ADAPTERS[system](dsn)
    async with adapter:
        started = time.perf_counter()
        await adapter.enqueue_bulk(args.jobs)
        enqueue_rate = args.jobs / (time.perf_counter() - started)
        assert await pending(dsn, adapter.pending_sql) == args.jobs
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            await conn.execute(adapter.reset_sql)

        procs = start_workers(system, dsn, args.workers, args.concurrency)
        try:
            await asyncio.sleep(args.warmup)  # imports, connections, LISTEN: then idle
            await adapter.enqueue_bulk(args.jobs)
            visible = time.perf_counter()
            done = await wait_drained(dsn, adapter.pending_sql, timeout=600)
            drain_rate = args.jobs / (done - visible)

            log = Path(tempfile.mkdtemp(prefix="bench-latency-")) / "starts.log"
            sent: dict[int, float] = {}
            for i in range(args.latency_samples):
                sent[i] = time.time()
                await adapter.enqueue_one(i, str(log))
                await asyncio.sleep(args.latency_gap)
            await wait_drained(dsn, adapter.pending_sql, timeout=60)
            await asyncio.sleep(0.2)
        finally:
            stop_workers(procs)
    starts = {}
    for line in log.read_text().splitlines():
        marker, at = line.split()
        starts[int(marker)] = float(at)
    latencies = [(starts[i] - sent[i]) * 1000 for i in sent if i in starts]
    if len(latencies) != len(sent):
        raise RuntimeError(f"{system}: {len(sent) - len(latencies)} latency probes never ran")
    return Round(enqueue_rate, drain_rate, latencies)


@dataclass(frozen=True)
class Round:
    enqueue_per_s: float
    drain_per_s: float
    latencies_ms: list[float]


def summarise(rounds: list[Round]) -> dict[str, float]:
    latencies = [value for r in rounds for value in r.latencies_ms]
    return {
        "enqueue_per_s": round(statistics.median(r.enqueue_per_s for r in rounds)),
        "drain_per_s": round(statistics.median(r.drain_per_s for r in rounds)),
        "pickup_p50_ms": round(statistics.median(latencies), 2),
        "pickup_p99_ms": round(percentile(latencies, 0.99), 2),
    }


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "_worker":
        system, dsn, concurrency = sys.argv[2], sys.argv[3], int(sys.argv[4])
        asyncio.run(ADAPTERS[system].work(dsn, concurrency))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20000)
    parser.add_argument("--workers", type=int, default=2, help="worker processes per system")
    parser.add_argument("--concurrency", type=int, default=32, help="jobs at once per worker")
    parser.add_argument("--latency-samples", type=int, default=200)
    parser.add_argument("--latency-gap", type=float, default=0.02, help="seconds between probes")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3, help="measure every system this often")
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--database-url", default=DEFAULT_DSN, help="an admin connection")
    parser.add_argument("--no-record", action="store_true", help="do not append to docs/")
    args = parser.parse_args()

    systems = args.systems.split(",")
    rounds: dict[str, list[Round]] = {system: [] for system in systems}
    for number in range(args.rounds):
        shift = number % len(systems)
        for system in systems[shift:] + systems[:shift]:
            name, dsn = fresh_database(args.database_url, system)
            try:
                measured = asyncio.run(measure(system, dsn, args))
            finally:
                drop_database(args.database_url, name)
            rounds[system].append(measured)
            print(
                f"round {number + 1} {system}: enqueue {measured.enqueue_per_s:.0f}/s, "
                f"drain {measured.drain_per_s:.0f}/s",
                file=sys.stderr,
            )
    results = {system: summarise(rounds[system]) for system in systems}

    header = "| system | enqueue jobs/s | drain jobs/s | pickup p50 ms | pickup p99 ms |"
    rows = [header, "|---|---:|---:|---:|---:|"]
    for system, r in results.items():
        rows.append(
            f"| {system} | {r['enqueue_per_s']:.0f} | {r['drain_per_s']:.0f} | "
            f"{r['pickup_p50_ms']:.2f} | {r['pickup_p99_ms']:.2f} |"
        )
    figures: dict[str, Any] = {
        "rounds": args.rounds,
        "jobs": args.jobs,
        "workers": args.workers,
        "concurrency": args.concurrency,
    }
    for system, r in results.items():
        figures.update({f"{system}_{key}": value for key, value in r.items()})
    ours = results.get("mediajobs")
    for peer in ("procrastinate", "pgqueuer"):
        if ours and peer in results:
            for figure, key in (
                ("drain", "drain_per_s"),
                ("enqueue", "enqueue_per_s"),
                ("pickup_p50", "pickup_p50_ms"),
                ("pickup_p99", "pickup_p99_ms"),
            ):
                figures[f"ratio_vs_{peer}_{figure}"] = round(ours[key] / results[peer][key], 2)
    with_events = results.get("mediajobs_events")
    for peer in ("procrastinate", "pgqueuer"):
        if with_events and peer in results:
            drain = with_events["drain_per_s"] / results[peer]["drain_per_s"]
            figures[f"ratio_vs_{peer}_drain_with_events"] = round(drain, 2)
    table = "\n".join(rows)
    ratios = {k: v for k, v in figures.items() if k.startswith("ratio_")}
    table += "\n\nRatios (ours / peer's): " + ", ".join(f"`{k}` {v}" for k, v in ratios.items())
    print(table)
    if not args.no_record:
        command = "python bench/queue_throughput.py " + " ".join(sys.argv[1:])
        record("Queue throughput", table, command)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
