"""Bulk ingest (issue 16): throughput against the imaging floor, scan rates, memory, and an
upload's pickup behind an ingest backlog. Everything runs as real processes on this
machine's Postgres and Redis, each phase in a fresh database.

1. **Floor**: the library's catalog derivatives by a bare loop of Pillow calls on all cores
   (``bench/ingest_floor.py``: no queue, no database, no storage), before the first ingest
   and again after each: an ingest's ratio is to the mean of the floor runs on either side
   of it (this machine's speed drifts by up to a fifth within minutes).
2. **Ingest** into the development store (``local``: ``mediajobs serve`` in development
   keeps its objects in files under its data directory, and the workers, on the same
   machine, write those files directly) and into S3 (moto's server): ``--workers``
   ``mediajobs worker`` processes, then ``mediajobs ingest run LIBRARY --owner bench
   --json``, which follows the run until it is finished. Throughput comes from the
   checkpoint (each file's ``processed_at``). Each store is ingested ``--repeats`` times
   (2), each run in a fresh database and followed by a floor run; the store's ratio is the
   mean of its runs' ratios (one run alone is off by up to a tenth here). Every floor run,
   ingest and scan starts once the kernel has written back what the phase before left
   (``sync``).
3. **Scan**: a tree of ``--tree`` empty ``.jpg`` files, one scan-only worker (``--kinds
   ingest.scan``): ``ingest run TREE --batch 100 --detach``, then the same again (a rescan of
   the unchanged tree). Scan time is the scan job's ``started_at`` to ``finished_at``.
4. **Pickup**: the first scan left ``tree / 100`` ingest batches queued; one worker running
   every kind works on them while uploads go through the API one at a time (init, PUT,
   complete: a real ``media.process`` job each, the next after the last one finished);
   pickup is the job's ``started_at - created_at``.
5. **Busy**: the same uploads to one worker first idle, then while it ingests the library
   (its imaging processes busy with ingest files): pickup, and the upload's run time.

Throughput, for the floor and for ingest alike, is the steady rate: images finished between
the 10% and the 90% marks over the time between them (no start-up, no ramp-down; what a
5M-image run sees); the whole-run rate (all images over first start to last finish) is
printed too. Projections for 5M images assume throughput linear in cores.

    python bench/ingest.py [--images 1000] [--tree 1000000] [--uploads 200] [--quick]
        [--stores local,s3] [--repeats 2] [--phases floor,ingest,scan,pickup,busy]
        [--no-record]

Inputs are cached under ``.bench-cache/ingest`` (``--cache``). The last line printed is one
JSON object with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import DEFAULT_DSN, drop_database, fresh_database, percentile, record
from bench.ingest_floor import derivatives, run_floor, steady_rate
from bench.ingest_inputs import CACHE, Library, path_tree, photo_library
from bench.ingest_procs import (
    Sampler,
    Usage,
    cpu_between,
    cpu_snapshot,
    environment,
    mediajobs,
    postmaster_pid,
    sampling,
    stop,
    wait_until,
)
from bench.ingest_report import summarize, table

SECRET = "bench-ingest-secret-" + "c" * 40
OWNER = "bench"
BUCKET = "bench-ingest"


# -- shared ----------------------------------------------------------------------------


def free_port() -> int:
    from tests.conftest import free_port as port

    return port()


@contextlib.contextmanager
def database(admin_dsn: str, label: str) -> Iterator[str]:
    """A fresh, migrated database for one phase; dropped afterwards."""
    from mediajobs.db.migrate import migrate

    name, dsn = fresh_database(admin_dsn, label)
    try:
        asyncio.run(migrate(dsn))
        yield dsn
    finally:
        drop_database(admin_dsn, name)


def wait_for_workers(dsn: str, count: int, timeout: float = 60.0) -> None:
    """Until ``count`` workers listen for jobs (their LISTEN connections)."""

    def ready() -> bool:
        with psycopg.connect(dsn, autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND application_name = 'mediajobs-listener'"
            ).fetchone()
        return row is not None and row[0] >= count

    wait_until(ready, timeout, f"{count} workers to listen", interval=0.2)


def moto_pid(endpoint: str) -> int | None:
    """The pid of this process's moto server child at ``endpoint``."""
    port = endpoint.rsplit(":", 1)[-1]
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if port in child.cmdline() and "moto" in " ".join(child.cmdline()):
                return child.pid
    return None


def one_row(dsn: str, query: str, *params: object) -> tuple[Any, ...]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(query, params).fetchone()
    assert row is not None, query
    return tuple(row)


def usage_json(usage: Usage) -> dict[str, float]:
    return {
        "peak_tree_mib": round(usage.peak_tree_mib, 1),
        "peak_main_mib": round(usage.peak_main_mib, 1),
        "peak_child_mib": round(usage.peak_child_mib, 1),
        "cpu_s": round(usage.cpu_seconds, 1),
        "cpu_main_s": round(usage.cpu_main_seconds, 1),
    }


def imaging_cpu(paths: list[Path], sample: int) -> dict[str, float]:
    """CPU ms per image in this one process and thread, over the same ``sample`` images:
    ``make_catalog`` (what an imaging process runs for ingest when the pool is saturated)
    against the floor's ``derivatives``. Where the gap to the floor is not imaging, it is
    the pipeline around it."""
    from mediajobs.imaging.catalog import CatalogProfile, make_catalog

    profile = CatalogProfile()
    chosen = paths[:: max(1, len(paths) // sample)][:sample]

    def ours(path: Path) -> None:
        make_catalog(path.read_bytes(), profile, filename=path.name, threads=1)

    def floor(path: Path) -> None:
        derivatives(str(path))

    figures = {}
    for name, run in (("floor", floor), ("catalog", ours)):
        run(chosen[0])  # warm: imports, the font, codecs
        started = time.process_time()
        for path in chosen:
            run(path)
        figures[f"{name}_cpu_ms_per_image"] = round(
            (time.process_time() - started) * 1000 / len(chosen), 1
        )
    figures["imaging_cpu_ratio"] = round(
        figures["floor_cpu_ms_per_image"] / figures["catalog_cpu_ms_per_image"], 3
    )
    return figures


# -- ingest of the library -------------------------------------------------------------


def follow_run(
    args: list[str], env: dict[str, str], log: Path, timeout: float
) -> list[dict[str, Any]]:
    """Run ``mediajobs ingest run ... --json`` to its end; its JSON lines."""
    proc = mediajobs(args, env, log, stdout=subprocess.PIPE)
    lines: list[dict[str, Any]] = []

    def read() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            with contextlib.suppress(ValueError):
                lines.append(json.loads(raw))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop(proc, timeout=5)
        raise RuntimeError(f"the ingest did not finish in {timeout:g} s (logs: {log})") from None
    reader.join(timeout=5)
    if code != 0 or not lines:
        raise RuntimeError(f"mediajobs ingest run exited {code} (logs: {log})")
    return lines


def ingest_library(
    opts: argparse.Namespace, library: Library, store: str, logs: Path
) -> dict[str, Any]:
    """The whole library into ``store`` ("local" or "s3") by ``opts.workers`` workers."""
    from tests.support.emulators import S3_CREDENTIALS, moto_server

    from mediajobs.storage.s3 import make_client

    print(f"ingest into {store}: {library.count} images, {opts.workers} workers", file=sys.stderr)
    settle_writes()
    with database(opts.database_url, f"ingest_{store}") as dsn, contextlib.ExitStack() as stack:
        port = free_port()
        extra = {"MEDIAJOBS_JWT_SECRET": SECRET, "MEDIAJOBS_PORT": str(port)}
        if opts.imaging_processes is not None:
            extra["MEDIAJOBS_IMAGING_PROCESSES"] = str(opts.imaging_processes)
        if store == "local":
            # Development: the store's objects are files under the data directory, which
            # the workers (started once the API answers) write directly.
            data = stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-ingest-"))
            extra.update(MEDIAJOBS_ENV="development", MEDIAJOBS_DATA_DIR=data)
            env = environment(dsn, opts.redis_url, **extra)
            serve = mediajobs(["serve"], env, logs / f"{store}-serve.log")
            stack.callback(stop, serve)
            wait_until(lambda: _healthy(port), 30, "mediajobs serve")
            store_pid: int | None = serve.pid
        else:
            endpoint = stack.enter_context(moto_server())
            os.environ.update(S3_CREDENTIALS)  # moto's made-up keys, for this process's client
            client = make_client(endpoint_url=endpoint, region="us-east-1", force_path_style=True)
            client.create_bucket(Bucket=BUCKET)
            extra.update(
                S3_BUCKET=BUCKET,
                S3_ENDPOINT_URL=endpoint,
                S3_REGION="us-east-1",
                S3_FORCE_PATH_STYLE="1",
                **S3_CREDENTIALS,
            )
            env = environment(dsn, opts.redis_url, **extra)
            store_pid = moto_pid(endpoint)
        workers = [
            mediajobs(["worker"], env, logs / f"{store}-worker-{n}.log")
            for n in range(opts.workers)
        ]
        for proc in workers:
            stack.callback(stop, proc)
        wait_for_workers(dsn, len(workers))
        sampler = stack.enter_context(sampling())
        for n, proc in enumerate(workers):
            sampler.watch(f"worker-{n}", proc.pid)
        if store_pid is not None:
            sampler.watch("store", store_pid)
        postmaster = postmaster_pid()
        if postmaster is not None:
            sampler.watch("postgres", postmaster)
        batch = ["--batch", str(opts.batch)] if opts.batch else []
        lines = follow_run(
            ["ingest", "run", str(library.root), "--owner", OWNER, "--json", *batch],
            env,
            logs / f"{store}-ingest-run.log",
            opts.timeout,
        )
        for name in list(sampler.usage):
            sampler.forget(name)
        result = _ingest_result(dsn, library, sampler, lines)
        if store == "s3":
            result["objects"] = _count_objects(client)
        return result


def _healthy(port: int) -> bool:
    with contextlib.suppress(httpx.TransportError):
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    return False


def _since(moment: Any, origin: float) -> float | None:
    return None if moment is None else round(float(moment) - origin, 2)


def _count_objects(client: Any) -> int:
    count = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        count += page.get("KeyCount", 0)
    return count


def _ingest_result(
    dsn: str, library: Library, sampler: Sampler, lines: list[dict[str, Any]]
) -> dict[str, Any]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        run = conn.execute(
            "SELECT id, extract(epoch FROM created_at) FROM ingest_runs"
            " ORDER BY created_at DESC LIMIT 1"
        ).fetchone()
        assert run is not None
        run_id, created = run[0], float(run[1])
        statuses = dict(
            conn.execute(
                "SELECT status::text, count(*) FROM ingest_files WHERE run_id = %s GROUP BY 1",
                (run_id,),
            ).fetchall()
        )
        failed = dict(
            conn.execute(
                "SELECT error_code, count(*) FROM ingest_files"
                " WHERE run_id = %s AND status = 'failed' GROUP BY 1",
                (run_id,),
            ).fetchall()
        )
        done_at = [
            float(row[0])
            for row in conn.execute(
                "SELECT extract(epoch FROM processed_at) FROM ingest_files"
                " WHERE run_id = %s AND status = 'indexed'",
                (run_id,),
            )
        ]
        media = conn.execute(
            "SELECT count(*) FROM media WHERE purpose = 'catalog' AND status = 'ready'"
        ).fetchone()
        by_worker = dict(
            conn.execute(
                "SELECT result->>'worker', sum((result->>'indexed')::int) FROM ("
                " SELECT result FROM jobs WHERE kind = 'ingest.batch' AND result IS NOT NULL"
                " UNION ALL SELECT result FROM jobs_archive"
                " WHERE kind = 'ingest.batch' AND result IS NOT NULL) AS r GROUP BY 1"
            ).fetchall()
        )
        jobs = (  # every job: kind, started, finished, files indexed (a batch's result)
            "SELECT kind, extract(epoch FROM started_at) AS s, extract(epoch FROM finished_at)"
            " AS f, coalesce((result->>'indexed')::int, 0) AS n FROM jobs UNION ALL"
            " SELECT kind, extract(epoch FROM started_at), extract(epoch FROM finished_at),"
            " coalesce((result->>'indexed')::int, 0) FROM jobs_archive"
        )
        scan_row = conn.execute(
            f"SELECT min(s), max(f) FROM ({jobs}) AS j WHERE kind = 'ingest.scan'"
        ).fetchone()
        spans = [
            (float(row[0]), float(row[1]), int(row[2]))
            for row in conn.execute(
                f"SELECT s, f, n FROM ({jobs}) AS j WHERE kind = 'ingest.batch'"
                " AND n > 0 AND f IS NOT NULL"
            )
        ]
        batch_row = conn.execute(
            f"SELECT min(s), max(f), avg(f - s), count(*) FROM ({jobs}) AS j"
            " WHERE kind = 'ingest.batch'"
        ).fetchone()
    assert scan_row is not None
    assert batch_row is not None
    timeline = {  # seconds from the run's creation
        "scan_started": _since(scan_row[0], created),
        "scan_finished": _since(scan_row[1], created),
        "first_batch_started": _since(batch_row[0], created),
        "last_batch_finished": _since(batch_row[1], created),
        "batch_mean_s": None if batch_row[2] is None else round(float(batch_row[2]), 2),
        "batches": batch_row[3],
    }
    indexed = len(done_at)
    whole = indexed / (max(done_at) - created) if done_at else 0.0
    usage = {name: usage_json(u) for name, u in sampler.usage.items()}
    workers = [u for name, u in usage.items() if name.startswith("worker-")]
    return {
        "indexed": indexed,
        "statuses": statuses,
        "failed_by_code": failed,
        "media_rows": media[0] if media else 0,
        "by_worker": {str(k): int(v) for k, v in by_worker.items()},
        "images_per_s": round(steady_rate(spans), 3) if spans else 0.0,
        "images_per_s_whole": round(whole, 3),
        "seconds": round(max(done_at) - created, 1) if done_at else None,
        "worker_peak_tree_mib": max(w["peak_tree_mib"] for w in workers),
        "worker_peak_main_mib": max(w["peak_main_mib"] for w in workers),
        "worker_peak_child_mib": max(w["peak_child_mib"] for w in workers),
        "cpu_s_per_image": {
            name: round(u["cpu_s"] / max(indexed, 1), 3) for name, u in usage.items()
        },
        "main_cpu_s_per_image": {  # a worker's own process, without its imaging processes
            name: round(u["cpu_main_s"] / max(indexed, 1), 3)
            for name, u in usage.items()
            if name.startswith("worker-")
        },
        "timeline": timeline,
        "last_line": lines[-1],
        "usage": usage,
        "input_mb": round(library.bytes / 1e6, 1),
    }


# -- scan and pickup ---------------------------------------------------------------------


def _scan(dsn: str, env: dict[str, str], tree: Path, log: Path, timeout: float) -> dict[str, Any]:
    """One ``ingest run TREE --batch 100 --detach`` to the end of its scan."""
    proc = mediajobs(
        ["ingest", "run", str(tree), "--owner", OWNER, "--batch", "100", "--detach"],
        env,
        log,
        stdout=subprocess.PIPE,
    )
    out, _ = proc.communicate(timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"ingest run exited {proc.returncode} (logs: {log})")
    run_id = uuid.UUID(json.loads(out.splitlines()[-1])["runId"])
    wait_until(
        lambda: (
            one_row(dsn, "SELECT state FROM ingest_runs WHERE id = %s", run_id)[0] != "scanning"
        ),
        timeout,
        "the scan",
        interval=0.5,
    )
    state, scanned, skipped, errors, queued, job_id = one_row(
        dsn,
        "SELECT state, scanned, skipped, scan_errors, queued, scan_job_id"
        " FROM ingest_runs WHERE id = %s",
        run_id,
    )

    def job_times() -> tuple[Any, ...]:
        return one_row(
            dsn,
            "SELECT extract(epoch FROM started_at), extract(epoch FROM finished_at) FROM ("
            " SELECT started_at, finished_at FROM jobs WHERE id = %s"
            " UNION ALL SELECT started_at, finished_at FROM jobs_archive WHERE id = %s) AS j",
            job_id,
            job_id,
        )

    wait_until(lambda: job_times()[1] is not None, 60, "the scan job to finish", interval=0.2)
    started, finished = (float(v) for v in job_times())
    first_batch = one_row(
        dsn,
        "SELECT extract(epoch FROM min(created_at)) FROM jobs"
        " WHERE kind = 'ingest.batch' AND payload->>'runId' = %s",
        str(run_id),
    )[0]
    paths = scanned + skipped + errors
    return {
        "state": state,
        "paths": paths,
        "scanned": scanned,
        "skipped": skipped,
        "errors": errors,
        "queued": queued,
        "seconds": round(finished - started, 2),
        "paths_per_s": round(paths / (finished - started)),
        "first_batch_after_s": None
        if first_batch is None
        else round(float(first_batch) - started, 2),
    }


def scan_and_pickup(opts: argparse.Namespace, tree: Path, logs: Path) -> dict[str, Any]:
    """The scan figures, then (the first scan's batches waiting) the pickup figures."""
    print(f"scan: {opts.tree} paths", file=sys.stderr)
    settle_writes()
    figures: dict[str, Any] = {}
    with database(opts.database_url, "ingest_scan") as dsn, contextlib.ExitStack() as stack:
        port = free_port()
        env = environment(
            dsn, opts.redis_url, MEDIAJOBS_JWT_SECRET=SECRET, MEDIAJOBS_PORT=str(port)
        )
        scanner = mediajobs(["worker", "--kinds", "ingest.scan"], env, logs / "scan-worker.log")
        stack.callback(stop, scanner)
        wait_for_workers(dsn, 1)
        sampler = stack.enter_context(sampling())
        sampler.watch("scanner", scanner.pid)
        postmaster = postmaster_pid()
        scans = []
        for label in ("scan", "rescan"):
            before = (cpu_snapshot(scanner.pid), cpu_snapshot(postmaster or 0))
            scans.append(_scan(dsn, env, tree, logs / f"{label}-run.log", opts.timeout))
            after = (cpu_snapshot(scanner.pid), cpu_snapshot(postmaster or 0))
            scans[-1]["scanner_cpu_s"] = round(cpu_between(before[0], after[0]), 1)
            scans[-1]["postgres_cpu_s"] = round(cpu_between(before[1], after[1]), 1)
        first, rescan = scans
        sampler.forget("scanner")
        stop(scanner)
        figures.update(
            scan=first,
            rescan=rescan,
            scanner=usage_json(sampler.usage["scanner"]),
        )
        if "pickup" in opts.phases:
            figures["pickup"] = pickup(opts, dsn, env, port, logs)
    return figures


class Uploader:
    """Uploads through the API of ``mediajobs serve`` on ``port``, one at a time: each
    upload's ``media.process`` pickup (``started_at - created_at``) and run time, in ms."""

    def __init__(self, dsn: str, port: int) -> None:
        from tests.support.images import jpeg, photo

        from mediajobs.service.auth import Authenticator

        self.dsn = dsn
        self.data = jpeg(photo(1200, 900))
        token = Authenticator(SECRET).issue_token("uploader", ttl=3600)
        self.headers = {"Authorization": f"Bearer {token}"}
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
        self.rng = random.Random(16)
        self.count = 0

    def close(self) -> None:
        self.client.close()

    def one(self) -> tuple[float, float]:
        """One upload, waited for: (pickup ms, run ms). The next upload then competes with
        the ingest work only, not with this one; a pause follows, out of step with the
        worker's claim cycle."""
        self.count += 1
        body = {"filename": f"up-{self.count}.jpg", "contentType": "image/jpeg",
                "size": len(self.data)}  # fmt: skip
        init = self.client.post("/media/upload/init", json=body, headers=self.headers)
        ticket = init.raise_for_status().json()
        self.client.put(
            ticket["uploadURL"], content=self.data, headers=ticket["headers"]
        ).raise_for_status()
        done = self.client.post(
            "/media/upload/complete",
            json={"objectPath": ticket["objectPath"]},
            headers=self.headers,
        )
        job_id = uuid.UUID(done.raise_for_status().json()["jobId"])
        pickup_ms = _pickup_ms(self.dsn, job_id)
        _wait_finished(self.dsn, job_id)
        run_ms = one_row(
            self.dsn,
            "SELECT extract(epoch FROM finished_at - started_at) * 1000 FROM jobs WHERE id = %s"
            " UNION ALL SELECT extract(epoch FROM finished_at - started_at) * 1000"
            " FROM jobs_archive WHERE id = %s",
            job_id,
            job_id,
        )[0]
        time.sleep(self.rng.uniform(0.05, 0.3))
        return pickup_ms, float(run_ms)


def latencies(pairs: list[tuple[float, float]]) -> dict[str, Any]:
    pickups = [p for p, _ in pairs]
    runs = [r for _, r in pairs]
    return {
        "uploads": len(pairs),
        "p50_ms": round(percentile(pickups, 0.5), 2),
        "p99_ms": round(percentile(pickups, 0.99), 2),
        "max_ms": round(max(pickups), 2),
        "run_p50_ms": round(percentile(runs, 0.5), 1),
        "run_p99_ms": round(percentile(runs, 0.99), 1),
        "pickups_ms": [round(p, 2) for p in pickups],
        "runs_ms": [round(r, 1) for r in runs],
    }


BACKLOG = "SELECT count(*) FROM jobs WHERE kind = 'ingest.batch' AND state = 'queued'"
RUNNING = "SELECT count(*) FROM jobs WHERE kind = 'ingest.batch' AND state = 'running'"


def pickup(
    opts: argparse.Namespace, dsn: str, env: dict[str, str], port: int, logs: Path
) -> dict[str, Any]:
    """Uploads one at a time through the API while one worker (every kind) has the scan's
    ingest batches queued."""
    print(f"pickup: {opts.uploads} uploads behind the ingest backlog", file=sys.stderr)
    with api_and_worker(dsn, env, port, logs, "pickup") as uploader:
        time.sleep(2.0)  # the worker is into the backlog (its ingest slots full)
        backlog_before = one_row(dsn, BACKLOG)[0]
        pairs = [uploader.one() for _ in range(opts.uploads)]
        backlog_after = one_row(dsn, BACKLOG)[0]
        running = one_row(dsn, RUNNING)[0]
    return {
        **latencies(pairs),
        "backlog_batches_before": backlog_before,
        "backlog_batches_after": backlog_after,
        "ingest_batches_running_at_end": running,
    }


def busy(opts: argparse.Namespace, library: Library, logs: Path) -> dict[str, Any]:
    """Uploads one at a time to one worker (every kind, defaults) first idle, then while it
    ingests the library (its imaging processes busy with ingest files): pickup, and run
    time against the idle run time (the imaging pool's priority at work)."""
    count = max(3, opts.uploads // 4)
    print(f"busy: {count} uploads idle, then {count} during an ingest", file=sys.stderr)
    with database(opts.database_url, "ingest_busy") as dsn:
        port = free_port()
        env = environment(
            dsn, opts.redis_url, MEDIAJOBS_JWT_SECRET=SECRET, MEDIAJOBS_PORT=str(port)
        )
        with api_and_worker(dsn, env, port, logs, "busy") as uploader:
            uploader.one()  # warm: the imaging processes start
            idle = [uploader.one() for _ in range(count)]
            run = mediajobs(
                ["ingest", "run", str(library.root), "--owner", OWNER, "--detach"],
                env,
                logs / "busy-ingest-run.log",
                stdout=subprocess.PIPE,
            )
            run.communicate(timeout=120)
            wait_until(lambda: one_row(dsn, RUNNING)[0] > 0, 60, "ingest batches to run")
            time.sleep(2.0)  # every imaging process has an ingest file
            during = []
            for _ in range(count):
                during.append(uploader.one())
                if one_row(dsn, RUNNING)[0] == 0:
                    break  # the ingest is over: later uploads would be idle ones
    return {"idle": latencies(idle), "during": latencies(during)}


@contextlib.contextmanager
def api_and_worker(
    dsn: str, env: dict[str, str], port: int, logs: Path, label: str
) -> Iterator[Uploader]:
    """``mediajobs serve`` and one ``mediajobs worker`` (every kind), both ready, and an
    uploader through the API; all stopped on the way out."""
    serve = mediajobs(["serve"], env, logs / f"{label}-serve.log")
    worker = mediajobs(["worker"], env, logs / f"{label}-worker.log")
    uploader = None
    try:
        wait_until(lambda: _healthy(port), 30, "mediajobs serve")
        wait_for_workers(dsn, 1)
        uploader = Uploader(dsn, port)
        yield uploader
    finally:
        if uploader is not None:
            uploader.close()
        stop(worker)
        stop(serve)


def _wait_finished(dsn: str, job_id: uuid.UUID, timeout: float = 120.0) -> None:
    query = (
        "SELECT 1 FROM jobs WHERE id = %s AND finished_at IS NOT NULL"
        " UNION ALL SELECT 1 FROM jobs_archive WHERE id = %s"
    )
    with psycopg.connect(dsn, autocommit=True) as conn:
        wait_until(
            lambda: conn.execute(query, (job_id, job_id)).fetchone() is not None,
            timeout,
            f"upload job {job_id} to finish",
            interval=0.02,
        )


def _pickup_ms(dsn: str, job_id: uuid.UUID, timeout: float = 30.0) -> float:
    deadline = time.monotonic() + timeout
    with psycopg.connect(dsn, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT extract(epoch FROM started_at - created_at) * 1000 FROM jobs"
                " WHERE id = %s AND started_at IS NOT NULL"
                " UNION ALL SELECT extract(epoch FROM started_at - created_at) * 1000"
                " FROM jobs_archive WHERE id = %s AND started_at IS NOT NULL",
                (job_id, job_id),
            ).fetchone()
            if row is not None:
                return float(row[0])
            time.sleep(0.01)
    raise RuntimeError(f"upload job {job_id} was not picked up in {timeout:g} s")


def settle_writes() -> None:
    """Wait until the kernel has written what earlier phases left in its page cache
    (``sync``), so that no phase pays for the writeback of the one before (an ingest into
    the development store writes about 2 GB). On the bench machine it finds nothing left
    by then; it prints how long it took."""
    started = time.monotonic()
    os.sync()
    print(f"  (sync: {time.monotonic() - started:.1f} s)", file=sys.stderr)


def floor_run(paths: list[Path]) -> dict[str, float]:
    """One run of the floor over ``paths``: its steady and whole-run rates."""
    print(f"floor: {len(paths)} images", file=sys.stderr)
    settle_writes()
    floor = run_floor(paths)
    return {
        "images_per_s": round(steady_rate([(t, t, 1) for t in floor.done_at]), 3),
        "images_per_s_whole": round(len(paths) / (floor.done_at[-1] - floor.started), 3),
    }


def mean_floor(runs: list[dict[str, float]]) -> dict[str, float]:
    """The mean rates of several floor runs."""
    return {
        key: round(sum(run[key] for run in runs) / len(runs), 3)
        for key in ("images_per_s", "images_per_s_whole")
    }


def combine_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Several ingests of one store as one result: the mean rates, each run's ratio to the
    floor runs on either side of it (``ratios``; their mean is the store's ratio), the
    largest peaks, and the last run's other figures."""
    combined = dict(runs[-1])
    for key in ("images_per_s", "images_per_s_whole"):
        combined[key] = round(sum(run[key] for run in runs) / len(runs), 3)
    for key in ("worker_peak_tree_mib", "worker_peak_main_mib", "worker_peak_child_mib"):
        combined[key] = max(run[key] for run in runs)
    if all("floor_around" in run for run in runs):
        combined["floor_around"] = mean_floor([run["floor_around"] for run in runs])
        for name, key in (("ratios", "images_per_s"), ("ratios_whole", "images_per_s_whole")):
            combined[name] = [round(run[key] / run["floor_around"][key], 3) for run in runs]
    return combined


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--images", type=int, default=1000, help="photos in the library")
    parser.add_argument("--tree", type=int, default=1_000_000, help="paths in the scan tree")
    parser.add_argument("--uploads", type=int, default=200, help="uploads timed for pickup")
    parser.add_argument("--workers", type=int, default=2, help="worker processes for ingest")
    parser.add_argument(
        "--batch", type=int, help="files per ingest batch (default: the setting's, 32)"
    )
    parser.add_argument(
        "--imaging-processes",
        type=int,
        help="MEDIAJOBS_IMAGING_PROCESSES of each worker (default: the cores divided among "
        "the workers, as docs/ingest.md advises when several workers share a machine)",
    )
    parser.add_argument("--stores", default="local,s3", help="local and/or s3")
    parser.add_argument(
        "--repeats",
        type=int,
        default=2,
        help="ingests of each store, each followed by a floor run; the ratio is their mean "
        "(one run on this noisy machine can be off by a tenth)",
    )
    parser.add_argument("--phases", default="floor,ingest,scan,pickup,busy")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a small run (minutes) to check the machinery; its figures are mostly start-up, "
        "so it is not recorded",
    )
    parser.add_argument("--timeout", type=float, default=3600.0, help="per phase, seconds")
    parser.add_argument("--cache", type=Path, default=CACHE, help="where inputs are kept")
    parser.add_argument("--database-url", default=DEFAULT_DSN, help="an admin connection")
    parser.add_argument(
        "--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    parser.add_argument("--no-record", action="store_true", help="do not append to docs/")
    opts = parser.parse_args()
    if opts.quick:
        opts.images, opts.tree, opts.uploads, opts.repeats = 24, 20_000, 20, 1
        opts.batch = opts.batch or 4  # so both workers get batches of so few images
    opts.divided_cores = opts.imaging_processes is None
    if opts.imaging_processes is None:
        opts.imaging_processes = max(1, (os.cpu_count() or 1) // opts.workers)
    opts.stores = [s for s in opts.stores.split(",") if s]
    opts.phases = [p for p in opts.phases.split(",") if p]
    if set(opts.stores) - {"local", "s3"}:
        parser.error("--stores: local and/or s3")
    if set(opts.phases) - {"floor", "ingest", "scan", "pickup", "busy"}:
        parser.error("--phases: floor, ingest, scan, pickup, busy")
    logs = Path(f"/tmp/bench-ingest-{time.strftime('%Y%m%d-%H%M%S')}")
    logs.mkdir(parents=True)
    print(f"logs: {logs}", file=sys.stderr)
    parts: dict[str, Any] = {}
    library = None
    if {"floor", "ingest", "busy"} & set(opts.phases):
        library = photo_library(opts.images, opts.cache)
        paths = sorted(p for p in library.root.rglob("*") if p.is_file())
    floors: list[dict[str, float]] = []
    if "floor" in opts.phases:
        floors.append(floor_run(paths))
        parts["floor"] = imaging_cpu(paths, sample=10 if opts.quick else 40)
    if "ingest" in opts.phases:
        assert library is not None
        for store in opts.stores:
            runs = []
            for _ in range(opts.repeats):
                result = ingest_library(opts, library, store, logs)
                if "floor" in opts.phases:
                    # The floor again right after: this machine's speed drifts by a fifth
                    # within minutes (other tenants), so each ingest is compared with the
                    # floor runs on either side of it, not with one taken minutes before.
                    floors.append(floor_run(paths))
                    result["floor_around"] = mean_floor(floors[-2:])
                runs.append(result)
            parts[store] = combine_runs(runs)
            (logs / f"{store}-result.json").write_text(json.dumps(parts[store], indent=2))
    if floors:
        parts["floor"].update(mean_floor(floors), runs=[f["images_per_s"] for f in floors])
    if {"scan", "pickup"} & set(opts.phases):
        tree = path_tree(opts.tree, opts.cache)
        parts["scan"] = scan_and_pickup(opts, tree, logs)
        (logs / "scan-result.json").write_text(json.dumps(parts["scan"], indent=2))
    if "busy" in opts.phases:
        assert library is not None
        parts["busy"] = busy(opts, library, logs)
        (logs / "busy-result.json").write_text(json.dumps(parts["busy"], indent=2))
    figures = summarize(opts, library, parts)
    text = table(figures, opts)
    print(text, file=sys.stderr)
    if not (opts.no_record or opts.quick):
        record("Bulk ingest", text, "python bench/ingest.py " + " ".join(sys.argv[1:]))
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
