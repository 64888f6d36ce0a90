"""What `mediajobs ingest run` (following) and `ingest status` say about a run whose scan
failed (its error, and a non-zero exit, never "finished"), a run that found no image, and
a run no worker takes; what `ingest status` says of a scan and of batches waiting for
their retry."""

from __future__ import annotations

import argparse
import asyncio
import json
import uuid

import pytest
from psycopg.types.json import Jsonb

from mediajobs.cli import ingest as cli_ingest
from mediajobs.cli.ingest import _follow, _summary
from mediajobs.config import Settings
from mediajobs.db.ingest import IngestRepository, IngestRun, SourceOwnedElsewhere
from mediajobs.db.pool import Pool
from mediajobs.ingest.runs import start_run
from mediajobs.queue import kinds
from mediajobs.queue.models import JobSpec
from mediajobs.queue.queue import JobQueue


@pytest.fixture
def ingest(pool: Pool) -> IngestRepository:
    return IngestRepository(pool)


async def scan_ended(
    ingest: IngestRepository, run: IngestRun, *, scanned: int, skipped: int, errors: int
) -> None:
    """The run's scan is over, having seen these counts and queued nothing."""
    async with ingest.transaction() as conn:
        counts = {"scanned": scanned, "skipped": skipped, "errors": errors, "queued": 0}
        await ingest.add_scan_counts(conn, run.id, **counts)
    await ingest.finish_scan(run.id)


async def start(ingest: IngestRepository, pool: Pool, uri: str, owner: str = "alice") -> IngestRun:
    """A run of ``uri`` for ``owner`` as ``ingest run`` starts one: its scan job queued."""
    return await start_run(
        ingest, JobQueue(pool), uri=uri, owner_id=owner, profile="catalog", batch_size=32
    )


async def test_a_followed_run_whose_scan_failed_says_why_and_exits_1(
    ingest: IngestRepository, capsys: pytest.CaptureFixture[str]
) -> None:
    run = await ingest.open_run("memory://memory/other/", "alice", "catalog", 32)
    await ingest.finish_scan(
        run.id,
        error={"code": "storage_error", "message": "a remote memory store cannot list"},
    )
    assert await _follow(ingest, run, json_lines=True) == 1
    err = capsys.readouterr().err
    assert "the scan of memory://memory/other/ failed (storage_error)" in err
    assert "cannot list" in err

    status = await ingest.status(run.id)
    assert status is not None
    line = _summary(status, None)
    assert "failed (storage_error): a remote memory store cannot list" in line
    assert "finished" not in line

    good = await ingest.open_run("file:///srv/photos", "alice", "catalog", 32)
    # A top-up that found nothing new.
    await scan_ended(ingest, good, scanned=3, skipped=1, errors=0)
    assert await _follow(ingest, good, json_lines=True) == 0
    done = await ingest.status(good.id)
    assert done is not None and "finished" in _summary(done, None)


async def test_a_followed_run_that_found_no_image_says_so_and_exits_1(
    ingest: IngestRepository, capsys: pytest.CaptureFixture[str]
) -> None:
    run = await ingest.open_run("file:///srv/empty-or-typo", "alice", "catalog", 32)
    await scan_ended(ingest, run, scanned=0, skipped=4, errors=1)
    assert await _follow(ingest, run, json_lines=True) == 1
    err = capsys.readouterr().err
    assert "no image under file:///srv/empty-or-typo (4 other files skipped, 1 scan" in err
    assert ".avif .heic .heif .jpeg .jpg .png .tif .tiff .webp" in err
    status = await ingest.status(run.id)
    assert status is not None
    assert ": found no approved file; 0 of 0 files done" in _summary(status, None)


async def test_a_followed_run_no_worker_takes_gets_a_hint_once(
    pool: Pool,
    ingest: IngestRepository,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(cli_ingest, "SCAN_WAIT_HINT", 0.5)
    run = await start(ingest, pool, "file:///srv/waiting")
    follow = asyncio.create_task(_follow(ingest, run, json_lines=True))
    await asyncio.sleep(3.5)  # three looks past the hint's time
    # A worker took it, and its attempt failed: queued again, it is not "no worker".
    error = '{"code": "storage_unavailable", "message": "the bucket\\nis down"}'
    scanning = await ingest.get_run(run.id)
    assert scanning is not None and scanning.scan_job_id is not None
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE jobs SET attempt = 1, error = %s::jsonb WHERE id = %s",
            (error, scanning.scan_job_id),
        )
    await asyncio.sleep(2.5)
    await scan_ended(ingest, run, scanned=1, skipped=0, errors=0)
    assert await asyncio.wait_for(follow, 10) == 0
    err = capsys.readouterr().err
    assert err.count(f"no worker has taken the scan of run {run.id} yet") == 1, err
    retried = (
        f"the scan of run {run.id} failed its attempt 1 of 5 (storage_unavailable: the "
        "bucket is down); it is retried"
    )
    assert err.count(retried) == 1, err


async def test_status_shows_a_scan_and_batches_waiting_for_their_retry(
    database_url: str, pool: Pool, ingest: IngestRepository, capsys: pytest.CaptureFixture[str]
) -> None:
    run = await start(ingest, pool, "file:///srv/outage")
    unmounted = {"code": "retry", "message": "no such folder; waiting for the source"}
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE jobs SET attempt = 1, error = %s WHERE id = (SELECT scan_job_id FROM "
            "ingest_runs WHERE id = %s)",
            (Jsonb({"code": "storage_unavailable", "message": "bucket down"}), run.id),
        )
        for attempt in (2, 3):  # two batches waiting out the outage
            await conn.execute(
                "INSERT INTO jobs (id, kind, owner_id, state, attempt, error, payload) "
                "VALUES (%s, 'ingest.batch', 'alice', 'queued', %s, %s, %s)",
                (uuid.uuid4(), attempt, Jsonb(unmounted), Jsonb({"runId": str(run.id)})),
            )
    settings = Settings(database_url=database_url)
    args = argparse.Namespace(run_id=run.id, json=False)
    assert await asyncio.to_thread(cli_ingest.cmd_ingest_status, args, settings) == 0
    out = capsys.readouterr().out
    assert (
        f"  scan       the scan of run {run.id} failed its attempt 1 of 5 "
        "(storage_unavailable: bucket down); it is retried"
    ) in out, out
    assert (
        "  waiting    2 batches wait to be retried; the last error: retry: no such folder; "
        "waiting for the source"
    ) in out, out
    assert "  ETA -" in out, out  # scanning, nothing open yet

    args = argparse.Namespace(run_id=run.id, json=True)
    assert await asyncio.to_thread(cli_ingest.cmd_ingest_status, args, settings) == 0
    shown = json.loads(capsys.readouterr().out)
    read = await ingest.get_run(run.id)
    assert read is not None and read.scan_job_id is not None
    assert shown["scanJob"] == {
        "id": str(read.scan_job_id),
        "state": "queued",
        "attempt": 1,
        "maxAttempts": 5,
        "error": {"code": "storage_unavailable", "message": "bucket down"},
    }
    assert shown["waitingBatches"] == {"batches": 2, "error": unmounted}
    assert shown["etaSeconds"] is None


async def test_a_run_whose_scan_job_was_cancelled_before_it_began_says_so(
    database_url: str,
    pool: Pool,
    ingest: IngestRepository,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run = await start(ingest, pool, "file:///srv/cancelled")
    async with pool.connection() as conn:  # `jobs cancel` of the queued scan
        await conn.execute("UPDATE jobs SET state = 'cancelled' WHERE kind = 'ingest.scan'")
    assert await asyncio.wait_for(_follow(ingest, run, json_lines=True), 10) == 1
    said = (
        "the scan of file:///srv/cancelled failed (scan_job_ended): its scan job was "
        "cancelled before it began; to start it again: mediajobs ingest run "
        "file:///srv/cancelled --owner alice"
    )
    assert said in capsys.readouterr().err
    args = argparse.Namespace(run_id=run.id, json=False)
    settings = Settings(database_url=database_url)
    assert await asyncio.to_thread(cli_ingest.cmd_ingest_status, args, settings) == 0
    assert said in capsys.readouterr().out


async def test_a_scan_job_reaped_on_its_last_attempt_mid_scan_ends_its_run(
    database_url: str,
    pool: Pool,
    ingest: IngestRepository,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A worker killed while scanning on the scan job's last attempt: the reaper fails the
    job, no handler ends the scan. The run reads as scan_failed, the source is free again,
    and following it ends (exit 1) instead of waiting forever."""
    run = await start(ingest, pool, "file:///srv/killed")
    queue = JobQueue(pool)
    async with pool.connection() as conn:
        await conn.execute("UPDATE jobs SET attempt = max_attempts - 1 WHERE kind = 'ingest.scan'")
    [job] = await queue.claim("killed-worker", 1, lease=0.2, kinds=["ingest.scan"])
    assert job.attempt == job.max_attempts
    async with ingest.transaction() as conn:  # the scan had seen files when it was killed
        await ingest.add_scan_counts(conn, run.id, scanned=40, skipped=2, errors=0, queued=0)
    follow = asyncio.create_task(_follow(ingest, run, json_lines=True))
    await asyncio.sleep(0.5)
    assert [t.state for t in await queue.reap_expired()] == ["failed"]
    assert await asyncio.wait_for(follow, 10) == 1
    err = capsys.readouterr().err
    assert "the scan of file:///srv/killed failed (scan_job_ended): its scan job failed at " in err
    assert f"attempt {job.max_attempts} of {job.max_attempts} (lease_expired" in err

    ended = await ingest.get_run(run.id)
    assert ended is not None and ended.state == "scan_failed"
    assert ended.scan_job is not None and ended.scan_job.state == "failed"
    [listed] = await ingest.list_runs()
    assert listed[0].state == "scan_failed"
    again = await start(ingest, pool, "file:///srv/killed")  # its source holds no more
    assert again.source_id == run.source_id
    args = argparse.Namespace(run_id=run.id, json=True)
    settings = Settings(database_url=database_url)
    assert await asyncio.to_thread(cli_ingest.cmd_ingest_status, args, settings) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["state"], shown["finished"]) == ("scan_failed", True)
    assert shown["scan"]["error"]["code"] == "scan_job_ended"
    assert shown["scanJob"]["state"] == "failed"


async def test_a_retry_through_a_run_of_the_sources_previous_owner_is_refused(
    database_url: str,
    pool: Pool,
    ingest: IngestRepository,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """alice's run found nothing, so bob could claim the source: its failed files are
    bob's items, and a retry through alice's run would give them to alice."""
    old = await start(ingest, pool, "file:///srv/handed-over")
    await scan_ended(ingest, old, scanned=0, skipped=0, errors=0)
    new = await start(ingest, pool, "file:///srv/handed-over", owner="bob")
    assert new.source_id == old.source_id
    settings = Settings(database_url=database_url)
    args = argparse.Namespace(run_id=old.id, code=None, stranded=False)
    assert await asyncio.to_thread(cli_ingest.cmd_ingest_retry, args, settings) == 1
    err = capsys.readouterr().err
    assert f"run {old.id} was alice's, but its source file:///srv/handed-over is bob's" in err
    assert "(mediajobs ingest runs --owner bob) (source_reowned)" in err
    args = argparse.Namespace(run_id=new.id, code=None, stranded=False)
    assert await asyncio.to_thread(cli_ingest.cmd_ingest_retry, args, settings) == 0
    assert json.loads(capsys.readouterr().out)["requeued"] == 0


async def test_a_failed_scan_job_retried_through_the_api_makes_its_run_scan_again(
    pool: Pool, ingest: IngestRepository
) -> None:
    """`POST /jobs/{id}/retry` of a failed scan job is a new job with the same runId: once
    its attempt starts, the run is read by it (scanning, and the source holds)."""
    run = await start(ingest, pool, "file:///srv/retried")
    queue = JobQueue(pool)
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE jobs SET state = 'failed', attempt = max_attempts, finished_at = now() "
            "WHERE kind = 'ingest.scan'"
        )
    ended = await ingest.get_run(run.id)
    assert ended is not None and ended.state == "scan_failed"
    await queue.enqueue(JobSpec(kinds.INGEST_SCAN, "alice", {"runId": str(run.id)}))
    [job] = await queue.claim("worker", 1, lease=30, kinds=[kinds.INGEST_SCAN])
    await ingest.restart_scan(run.id, job.id)
    scanning = await ingest.get_run(run.id)
    assert scanning is not None and (scanning.state, scanning.error) == ("scanning", None)
    assert scanning.scan_job is not None and scanning.scan_job.state == "running"
    with pytest.raises(SourceOwnedElsewhere):
        await start(ingest, pool, "file:///srv/retried", owner="bob")
