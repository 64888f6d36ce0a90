"""Bulk ingest end to end: the `mediajobs ingest` command and `mediajobs worker` processes
on the real Postgres, Redis and moto's S3 server; and the same handlers in this process on
the memory store."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import os
import pty
import select
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from mediajobs.config import Settings
from mediajobs.db.ingest import IngestRepository
from mediajobs.handlers.imaging_pool import PoolOptions
from mediajobs.ingest.runs import is_finished
from mediajobs.storage import Store
from mediajobs.storage.base import Locator
from tests.support.emulators import s3_store
from tests.support.images import jpeg, photo, quadrants
from tests.support.ingest import ingest_all, start_ingest, wait_finished
from tests.support.ingest_tree import GROWING, Tree, growing_file, make_tree
from tests.support.inprocess import in_process_site
from tests.support.media import CrashingPool, media_env, memory_store, s3_worker_env
from tests.support.sse import bearer
from tests.support.workers import (
    REPO,
    WorkerProcess,
    queue_pool,
    start_worker_process,
    wait_for,
    worker_env,
)

pytestmark = pytest.mark.timeout(300)

APP = ("--app", "mediajobs.handlers:build_registry")
OWNER = "alice"
# A file in the library: indexed, and ai_done once image understanding ran (media.embed,
# which the workers run after the batches, at lower priority).
IN_LIBRARY = {"indexed", "ai_done"}


def in_library(counts: dict[str, int]) -> int:
    return sum(counts.get(status, 0) for status in IN_LIBRARY)


async def ingest_cli(database_url: str, env: dict[str, str], *args: str) -> tuple[int, str, str]:
    """``mediajobs ingest ARGS`` as a real process; (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mediajobs",
        "ingest",
        *args,
        env=worker_env(database_url, **env),
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=240)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def run_to_the_end(
    database_url: str, env: dict[str, str], root: Path | str
) -> dict[str, Any]:
    """`ingest run ROOT --json`, followed to the end: its last progress line."""
    code, out, err = await ingest_cli(
        database_url, env, "run", str(root), "--owner", OWNER, "--batch", "2", "--json"
    )
    assert code == 0, err[-3000:]
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert lines and lines[-1]["finished"], out[-3000:]
    last: dict[str, Any] = lines[-1]
    return last


async def file_rows(database_url: str) -> dict[str, dict[str, Any]]:
    async with queue_pool(database_url) as pool, pool.connection() as conn:
        rows = await (await conn.execute("SELECT * FROM ingest_files")).fetchall()
    return {row["path"]: row for row in rows}


async def media_rows(database_url: str) -> dict[uuid.UUID, dict[str, Any]]:
    async with queue_pool(database_url) as pool, pool.connection() as conn:
        rows = await (await conn.execute("SELECT * FROM media")).fetchall()
    return {row["id"]: row for row in rows}


async def batch_results(database_url: str) -> list[dict[str, Any]]:
    async with queue_pool(database_url) as pool, pool.connection() as conn:
        rows = await (
            await conn.execute(
                "SELECT result FROM jobs WHERE kind = 'ingest.batch' AND state = 'succeeded' "
                "UNION ALL SELECT result FROM jobs_archive "
                "WHERE kind = 'ingest.batch' AND state = 'succeeded'"
            )
        ).fetchall()
    return [row["result"] for row in rows]


async def all_keys(store: Store, prefix: str = "") -> list[str]:
    keys: list[str] = []
    cursor: str | None = None
    while True:
        page = await store.list(prefix, cursor)
        keys.extend(item.key for item in page.items)
        if page.cursor is None:
            return sorted(keys)
        cursor = page.cursor


def named_keys(rows: dict[uuid.UUID, dict[str, Any]]) -> list[str]:
    """Every object key the media rows name (source and variants)."""
    keys = []
    for row in rows.values():
        keys.append(Locator.parse(row["source_locator"]).key)
        keys.extend(Locator.parse(v["locator"]).key for v in row["variants"].values())
    return sorted(keys)


async def check_outcome(
    tree: Tree, database_url: str, store: Store, files: dict[str, dict[str, Any]]
) -> None:
    """Every good file indexed with its item ready and its three objects; every bad one
    failed with the right code; no object that no row names."""
    indexed = {path for path, row in files.items() if row["status"] in IN_LIBRARY}
    assert indexed == set(tree.good)
    failed = {path: row["error_code"] for path, row in files.items() if row["status"] == "failed"}
    assert failed == tree.failed
    media = await media_rows(database_url)
    assert set(media) == {files[path]["media_id"] for path in tree.good}
    assert {row["status"] for row in media.values()} == {"ready"}
    assert {row["purpose"] for row in media.values()} == {"catalog"}
    keys = await all_keys(store, "catalog/")
    assert len(keys) == 3 * len(tree.good)
    assert named_keys(media) == keys  # no orphan, nothing missing
    for path, data in tree.good.items():
        row = media[files[path]["media_id"]]
        original = Locator.parse(row["source_locator"])
        assert original.key.startswith("catalog/original/")
        assert await store.download(original.key) == data  # byte for byte
        assert row["variants"]["thumbnail"]["width"] <= 300
        assert row["variants"]["thumbnail"]["height"] <= 300
        assert (
            max(row["variants"]["watermarked"]["width"], row["variants"]["watermarked"]["height"])
            <= 1200
        )
        assert row["gps"] is None or path == "2019/summer/IMG_0001.jpg"
    camera = media[files["2019/summer/IMG_0001.jpg"]["media_id"]]
    assert camera["exif"]["make"] == "Canon" and camera["gps"] is not None
    # yyyy/mm of the original comes from EXIF when the photo has it.
    assert "/original/2024/05/" in camera["source_locator"]


async def test_two_worker_processes_ingest_a_tree_into_s3_and_a_rescan_is_free(
    database_url: str, redis_url: str, moto_url: str, tmp_path: Path
) -> None:
    tree = make_tree(tmp_path / "photos")
    store = await asyncio.to_thread(s3_store, moto_url)
    env = {
        **s3_worker_env(moto_url, store.bucket, redis_url),
        "MEDIAJOBS_INGEST_SETTLE_SECONDS": "1",
        "MEDIAJOBS_LEASE_SECONDS": "10",
    }
    workers: list[WorkerProcess] = [
        start_worker_process(database_url, *APP, env=env) for _ in range(2)
    ]
    try:
        with growing_file(tree, seconds=4):
            follow = asyncio.ensure_future(run_to_the_end(database_url, env, tree.root))
            await asyncio.sleep(0)
        first = await follow
        files = await file_rows(database_url)
        await check_outcome(tree, database_url, store, files)
        assert first["scan"]["skipped"] == len(tree.skipped)
        assert first["scan"]["errors"] >= 1  # the symlink loop
        assert first["total"] == len(tree.good) + len(tree.failed)
        assert in_library(first["counts"]) == len(tree.good)
        assert first["failedByCode"] == {
            code: list(tree.failed.values()).count(code) for code in set(tree.failed.values())
        }
        # The growing file was imported once complete, never half-written.
        assert files[GROWING]["size"] == len(tree.good[GROWING])
        # Both workers took batches; no file was imported twice.
        results = await batch_results(database_url)
        assert len({r["worker"] for r in results if r["files"]}) == 2
        assert sum(r["indexed"] for r in results) == len(tree.good)

        # A rescan of the unchanged tree queues nothing and reads no image.
        batches_before = len(results)
        again = await run_to_the_end(database_url, env, tree.root)
        assert again["total"] == 0 and again["scan"]["queued"] == 0
        assert again["scan"]["scanned"] == first["scan"]["scanned"]
        assert len(await batch_results(database_url)) == batches_before

        # A changed file is imported again as a new version of the same item.
        changed = "2019/summer/IMG_0002.JPEG"
        tree.good[changed] = jpeg(quadrants(1000, 700))
        tree.write(changed, tree.good[changed])
        old = files[changed]
        third = await run_to_the_end(database_url, env, tree.root)
        assert third["total"] == 1 and in_library(third["counts"]) == 1
        files = await file_rows(database_url)
        assert files[changed]["media_id"] == old["media_id"]
        assert files[changed]["sha256"] != old["sha256"]
        await check_outcome(tree, database_url, store, files)

        # Failures are the source's: the latest run's report names them although the first
        # run failed them (the rescans left them alone); a retry queues them again in the
        # latest run (and they fail again there).
        for run_args in ((), (first["runId"],)):
            code, out, err = await ingest_cli(
                database_url, env, "report", *run_args, "--failed", "--csv"
            )
            assert code == 0, err
            reported = {row["path"]: row["code"] for row in csv.DictReader(io.StringIO(out))}
            assert reported == tree.failed
        code, out, err = await ingest_cli(database_url, env, "retry", "--code", "no_such_code")
        assert (code, out) == (1, ""), out
        assert "no failed file" in err and "empty_file" in err
        code, out, err = await ingest_cli(database_url, env, "retry", "--code", "empty_file")
        assert code == 0, err
        assert json.loads(out) == {
            "runId": third["runId"],
            "requeued": 1,
            "code": "empty_file",
            "stranded": False,
        }

        async def settled_again() -> bool:
            rows = await file_rows(database_url)
            return rows["broken/empty.jpg"]["status"] == "failed"

        await wait_for(settled_again, timeout=60)
        code, out, err = await ingest_cli(database_url, env, "status", "--json")
        assert code == 0, err
        status = json.loads(out)
        assert status["finished"] and status["failedByCode"] == {"empty_file": 1}
        assert status["sourceFailedByCode"] == first["failedByCode"]
        code, out, err = await ingest_cli(database_url, env, "runs", "--json")
        assert code == 0, err
        runs = [json.loads(line) for line in out.splitlines()]
        assert [r["runId"] for r in runs] == [third["runId"], again["runId"], first["runId"]]
        assert [(r["done"], r["total"], r["failed"]) for r in runs] == [
            (2, 2, 1),  # the changed file, and the retried one that failed again
            (0, 0, 0),
            # less the two files the third run took over (changed; retried)
            (first["total"] - 2, first["total"] - 2, len(tree.failed) - 1),
        ]
        # The rescan that found nothing new is finished, not "found no approved file".
        assert [r["state"] for r in runs] == ["finished"] * 3
        code, out, err = await ingest_cli(database_url, env, "status")
        others = len(tree.failed) - 1
        assert f"+ {others} failed files of this source from other runs" in out, out
        assert f"mediajobs ingest report {third['runId']} --failed" in out, out
        # The first run's status: the third run's failure is another run's to it.
        code, out, err = await ingest_cli(database_url, env, "status", first["runId"])
        assert "+ 1 failed files of this source from other runs" in out, out
        assert f"mediajobs ingest retry {first['runId']})" in out, out

        # Refusals name their code, and write nothing.
        refusals = {
            ("--owner", "someone-else"): "belongs to another owner, 'alice' (its files are, "
            "or its scan is making them, that owner's items) (source_owned_elsewhere)",
            ("--profile", "nope"): "--profile: no ingest profile 'nope'; the site policy has "
            "catalog (unknown_profile)",
        }
        for extra, said in refusals.items():
            args = ("run", str(tree.root), "--owner", OWNER, "--json", *extra)
            code, out, err = await ingest_cli(database_url, env, *args)
            assert (code, out) == (1, ""), (extra, out)
            assert said in err, err
        inside = tree.root / "2019"
        code, out, err = await ingest_cli(
            database_url, env, "run", str(inside), "--owner", OWNER, "--json"
        )
        assert (code, out) == (1, ""), out
        assert f"{inside.resolve().as_uri()} lies inside {tree.root.resolve().as_uri()}" in err
        assert err.rstrip().endswith("(source_overlaps)"), err
        code, out, err = await ingest_cli(database_url, env, "runs", "--json")
        assert len(out.splitlines()) == 3  # no run was recorded by the refusals
        # Nothing is stranded: --stranded queues nothing, and leaves the failures alone.
        code, out, err = await ingest_cli(database_url, env, "retry", "--stranded")
        assert code == 0, err
        assert json.loads(out) == {
            "runId": third["runId"],
            "requeued": 0,
            "code": None,
            "stranded": True,
        }
        statuses = {row["status"] for row in (await file_rows(database_url)).values()}
        assert "failed" in statuses and statuses - {"failed"} <= IN_LIBRARY
        code, out, err = await ingest_cli(database_url, env, "retry", "--stranded", "--code", "x")
        assert code == 2 and "not allowed with argument" in err, err
    finally:
        for worker in workers:
            assert await worker.stop() == 0, worker.stderr[-3000:]
        await store.close()


async def test_the_memory_store_takes_the_same_tree_in_process(
    database_url: str, redis_url: str, tmp_path: Path
) -> None:
    tree = make_tree(tmp_path / "photos")
    settings = Settings(ingest_settle_seconds=0.0)
    with memory_store() as memory:
        async with media_env(database_url, redis_url, memory, settings=settings) as env:
            run = await start_ingest(env, tree.root, batch_size=3)
            status = await wait_finished(env, run)
            assert run.source_uri == tree.root.resolve().as_uri()
            files = await file_rows(database_url)
            await check_outcome(tree, database_url, memory, files)
            assert status.total == len(tree.good) + len(tree.failed)
            async with env.pool.connection() as conn:
                events = await (
                    await conn.execute(
                        "SELECT data FROM job_events WHERE owner_id = %s "
                        "AND type = 'ingest_progress' ORDER BY id",
                        (OWNER,),
                    )
                ).fetchall()
            progress = [row["data"] for row in events]
            # One event per batch (and per scan chunk), not per file; the last one says done.
            assert 1 < len(progress) <= len(tree.good) + len(tree.failed)
            assert progress[-1]["done"] == progress[-1]["total"] == status.total
    # The items are the owner's, in the library API like any other.
    async with in_process_site(database_url, worker=False) as client:
        listed = await client.get("/media", params={"limit": 100}, headers=bearer(OWNER))
        assert listed.status_code == 200, listed.text
        items = listed.json()["items"]
        assert {item["id"] for item in items} == {
            str(row["media_id"]) for row in files.values() if row["status"] in IN_LIBRARY
        }
        assert {(item["purpose"], item["status"]) for item in items} == {("catalog", "ready")}


async def test_a_bucket_prefix_is_ingested_like_a_directory(
    database_url: str, redis_url: str, moto_url: str, tmp_path: Path
) -> None:
    tree = make_tree(tmp_path / "photos")
    store = await asyncio.to_thread(s3_store, moto_url)
    source = await asyncio.to_thread(s3_store, moto_url)
    for path, data in {**tree.good, **dict.fromkeys(tree.skipped, b"not an image")}.items():
        await source.upload(f"archive/{path}", data, "application/octet-stream")
    for path in tree.failed:
        await source.upload(f"archive/{path}", (tree.root / path).read_bytes(), "image/jpeg")
    previous = [
        {
            "kind": "s3",
            "bucket": source.bucket,
            "endpoint_url": moto_url,
            "region": "us-east-1",
            "force_path_style": True,
        }
    ]
    env = {
        **s3_worker_env(moto_url, store.bucket, redis_url),
        "STORAGE_PREVIOUS": json.dumps(previous),
    }
    worker = start_worker_process(database_url, *APP, env=env)
    try:
        last = await run_to_the_end(database_url, env, f"s3://{source.bucket}/archive")
        assert last["source"] == f"s3://{source.bucket}/archive/"
        files = await file_rows(database_url)
        await check_outcome(tree, database_url, store, files)
        assert last["scan"]["skipped"] == len(tree.skipped)
        assert {row["etag"] is not None for row in files.values()} == {True}
        again = await run_to_the_end(database_url, env, f"s3://{source.bucket}/archive")
        assert again["total"] == 0
    finally:
        assert await worker.stop() == 0, worker.stderr[-3000:]
        await store.close()
        await source.close()


async def test_a_scanner_and_a_worker_killed_mid_work_lose_and_double_nothing(
    database_url: str, redis_url: str, moto_url: str, tmp_path: Path
) -> None:
    root = tmp_path / "big"
    # 40,000 empty files (they fail as empty_file at database speed) make a scan long
    # enough to kill; a dozen photos make batches long enough to kill.
    for folder in range(40):
        directory = root / f"d{folder:02d}"
        directory.mkdir(parents=True)
        for index in range(1000):
            (directory / f"{index}.jpg").touch()
    photos = {f"photos/p{index:02d}.jpg": jpeg(photo(1600, 1200)) for index in range(12)}
    for path, data in photos.items():
        (root / path).parent.mkdir(exist_ok=True)
        (root / path).write_bytes(data)
    store = await asyncio.to_thread(s3_store, moto_url)
    env = {
        **s3_worker_env(moto_url, store.bucket, redis_url),
        "MEDIAJOBS_INGEST_SETTLE_SECONDS": "0",
    }
    scanner = start_worker_process(database_url, *APP, "--kinds", "ingest.scan", env=env)
    workers: list[WorkerProcess] = []
    try:
        code, out, err = await ingest_cli(
            database_url, env, "run", str(root), "--owner", OWNER, "--batch", "200", "--detach"
        )
        assert code == 0, err
        run_id = uuid.UUID(json.loads(out)["runId"])
        async with queue_pool(database_url) as pool:
            ingest = IngestRepository(pool)

            async def part_recorded() -> bool:
                run = await ingest.get_run(run_id)
                assert run is not None and run.state == "scanning", "the scan ended first"
                return run.queued > 0

            await wait_for(part_recorded, timeout=60, interval=0.005)
            assert await scanner.kill_group() == -signal.SIGKILL
            before = {
                path: row["media_id"] for path, row in (await file_rows(database_url)).items()
            }
            assert 0 < len(before) < 40_000 + len(photos)

            workers = [start_worker_process(database_url, *APP, env=env) for _ in range(2)]

            async def photo_in_flight() -> bool:
                rows = await file_rows(database_url)
                return any(
                    rows[path]["attempts"] >= 1 and rows[path]["status"] == "pending"
                    for path in photos
                    if path in rows
                )

            await wait_for(photo_in_flight, timeout=120, interval=0.005)
            assert await workers[0].kill_group() == -signal.SIGKILL
            workers.append(start_worker_process(database_url, *APP, env=env))

            async def finished() -> bool:
                status = await ingest.status(run_id)
                return status is not None and is_finished(status)

            await wait_for(finished, timeout=240, interval=0.5)
        again = await run_to_the_end(database_url, env, root)
        assert again["total"] == 0
        files = await file_rows(database_url)
        assert len(files) == 40_000 + len(photos)  # no miss, no duplicate
        assert len({row["media_id"] for row in files.values()}) == len(files)
        assert all(files[path]["media_id"] == media_id for path, media_id in before.items())
        assert {files[path]["status"] for path in photos} <= IN_LIBRARY
        empties = [row for path, row in files.items() if path not in photos]
        assert {(row["status"], row["error_code"]) for row in empties} == {("failed", "empty_file")}
        media = await media_rows(database_url)
        assert set(media) == {files[path]["media_id"] for path in photos}
        keys = await all_keys(store, "catalog/")
        assert len(keys) == 3 * len(photos) and named_keys(media) == keys
    finally:
        for worker in workers[1:]:
            assert await worker.stop() == 0, worker.stderr[-3000:]
        await store.close()


async def test_a_poison_file_fails_alone_and_named_after_its_last_attempt(
    database_url: str, redis_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "poison"
    root.mkdir()
    good = {f"ok{index}.jpg": jpeg(photo(900, 600)) for index in range(3)}
    poison = "line\nbreak/crash.jpg"  # a name that must not break the log lines naming it
    (root / "line\nbreak").mkdir()
    for name, data in {**good, poison: jpeg(photo(900, 600))}.items():
        (root / name).write_bytes(data)
    settings = Settings(ingest_settle_seconds=0.0, ingest_max_attempts=3)
    pool = CrashingPool(PoolOptions(processes=1, timeout=60))
    with memory_store() as memory:
        async with media_env(
            database_url, redis_url, memory, settings=settings, imaging=pool
        ) as env:
            await ingest_all(env, root)
    files = await file_rows(database_url)
    assert {path: row["status"] for path, row in files.items() if path not in good} == {
        poison: "failed"
    }
    assert {files[path]["status"] for path in good} <= IN_LIBRARY
    assert files[poison]["error_code"] == "decoder_crashed"
    assert pool.crashes == 3  # one batch, three tries, then the file fails
    named = [r.getMessage() for r in caplog.records if "crash.jpg" in r.getMessage()]
    assert any("decoder_crashed" in message for message in named), named
    assert all('"line\\nbreak/crash.jpg"' in message for message in named), named


async def test_on_a_terminal_run_shows_a_progress_bar_and_ctrl_c_stops_only_the_watching(
    database_url: str, tmp_path: Path
) -> None:
    root = tmp_path / "tty"
    root.mkdir()
    (root / "a.jpg").write_bytes(jpeg(photo(400, 300)))
    leader, follower = pty.openpty()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mediajobs",
        "ingest",
        "run",
        str(root),
        "--owner",
        OWNER,
        env={**worker_env(database_url), "COLUMNS": "120", "TERM": "xterm"},
        cwd=REPO,
        stdin=follower,
        stdout=follower,
        stderr=follower,
    )
    os.close(follower)
    seen = bytearray()

    def read_some() -> None:
        """What the terminal got within about half a second (the bar redraws steadily)."""
        deadline = time.monotonic() + 0.5
        with contextlib.suppress(OSError):
            while time.monotonic() < deadline and select.select([leader], [], [], 0.1)[0]:
                chunk = os.read(leader, 65536)
                if not chunk:
                    return
                seen.extend(chunk)

    try:
        # No worker runs: the run waits, scanning, while the bar is drawn.
        for _ in range(50):
            await asyncio.to_thread(read_some)
            if b"scanning" in seen:
                break
        assert b"scanning" in seen, seen.decode(errors="replace")
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 30) == 130  # stopped by Ctrl-C
        await asyncio.to_thread(read_some)
    finally:
        if proc.returncode is None:
            proc.kill()
        os.close(leader)
    assert b"stopped watching; the ingest goes on" in seen, seen.decode(errors="replace")
    async with queue_pool(database_url) as pool, pool.connection() as conn:
        job = await (
            await conn.execute("SELECT state FROM jobs WHERE kind = 'ingest.scan'")
        ).fetchone()
    assert job is not None and job["state"] == "queued"  # the ingest itself goes on
