"""What `mediajobs ingest run` (following) and `ingest status` say about a run whose scan
failed: its error, and a non-zero exit, never "finished"."""

from __future__ import annotations

import pytest

from mediajobs.cli.ingest import _follow, _summary
from mediajobs.db import open_pool
from mediajobs.db.ingest import IngestRepository


async def test_a_followed_run_whose_scan_failed_says_why_and_exits_1(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    pool = await open_pool(database_url, name="test", min_size=1, max_size=2)
    try:
        ingest = IngestRepository(pool)
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
        await ingest.finish_scan(good.id)
        assert await _follow(ingest, good, json_lines=True) == 0
        done = await ingest.status(good.id)
        assert done is not None and "finished" in _summary(done, None)
    finally:
        await pool.close()
