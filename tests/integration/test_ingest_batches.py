"""Ingest batches in this process (the real handlers, imaging processes and Postgres, the
memory store): what a batch does when the store fails, when the library item was deleted,
and when the job itself fails; a scan cancelled while it runs."""

from __future__ import annotations

import argparse
import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from mediajobs.cli.ingest import _follow, cmd_ingest_status
from mediajobs.config import Settings
from mediajobs.db.ingest import IngestRepository
from mediajobs.errors import JobCancelled, StorageDenied, StorageError, StorageUnavailable
from mediajobs.handlers import ingest as ingest_handlers
from mediajobs.ingest.runs import retry_failed
from mediajobs.storage import MemoryStore
from tests.support.images import jpeg, photo
from tests.support.ingest import OWNER, checkpoint, ingest_all, start_ingest, wait_scanned
from tests.support.media import media_env, memory_store
from tests.support.workers import wait_for

pytestmark = pytest.mark.timeout(180)

SETTINGS = Settings(ingest_settle_seconds=0.0)


def photos(root: Path, count: int) -> dict[str, bytes]:
    root.mkdir(parents=True, exist_ok=True)
    made = {f"p{index}.jpg": jpeg(photo(640 + index, 480)) for index in range(count)}
    for name, data in made.items():
        (root / name).write_bytes(data)
    return made


class FlakyStore(MemoryStore):
    """A memory store whose first ``failures`` catalog uploads fail with ``error``."""

    def __init__(self, base_url: str, failures: int, error: type[StorageError]) -> None:
        super().__init__(base_url)
        self.failures = failures
        self.error = error

    async def upload(self, key: str, data: Any, content_type: str, **kw: Any) -> Any:
        if key.startswith("catalog/") and self.failures > 0:
            self.failures -= 1
            raise self.error("the bucket said no")
        return await super().upload(key, data, content_type, **kw)


async def test_a_store_outage_makes_the_batch_wait_and_costs_no_attempt(
    database_url: str, redis_url: str, tmp_path: Path
) -> None:
    made = photos(tmp_path / "src", 3)
    store = FlakyStore("http://127.0.0.1:9/storage", failures=4, error=StorageUnavailable)
    async with media_env(database_url, redis_url, store, settings=SETTINGS) as env:
        status = await ingest_all(env, tmp_path / "src")
        rows = await checkpoint(env)
    in_library = status.counts["indexed"] + status.counts["ai_done"]
    assert in_library == len(made) and status.counts["failed"] == 0
    assert store.failures == 0
    # Waited out, not failed: the outage cost no file an attempt towards decoder_crashed.
    assert {row["attempts"] for row in rows.values()} == {1}


async def test_a_store_that_refuses_for_good_fails_the_file_with_its_code(
    database_url: str, redis_url: str, tmp_path: Path
) -> None:
    photos(tmp_path / "src", 1)
    store = FlakyStore("http://127.0.0.1:9/storage", failures=10, error=StorageDenied)
    async with media_env(database_url, redis_url, store, settings=SETTINGS) as env:
        status = await ingest_all(env, tmp_path / "src")
    assert status.failed_by_code == {"storage_denied": 1}


async def test_an_item_deleted_in_the_library_is_not_revived_and_keeps_its_objects(
    database_url: str, redis_url: str, tmp_path: Path
) -> None:
    root = tmp_path / "src"
    photos(root, 2)
    with memory_store() as memory:
        async with media_env(database_url, redis_url, memory, settings=SETTINGS) as env:
            await ingest_all(env, root)
            rows = await checkpoint(env)
            media_id: uuid.UUID = rows["p0.jpg"]["media_id"]
            await env.media.soft_delete(media_id, OWNER, undo_window=600)
            before = await env.keys("catalog/")
            stat = (root / "p0.jpg").stat()
            os.utime(root / "p0.jpg", ns=(stat.st_atime_ns, stat.st_mtime_ns - 10**9))
            status = await ingest_all(env, root)
            rows = await checkpoint(env)
            record = await env.record(media_id)
            after = await env.keys("catalog/")
    assert status.total == 1 and status.failed_by_code == {"media_deleted": 1}
    assert rows["p0.jpg"]["error_code"] == "media_deleted"
    assert record.status.value == "deleted"  # still restorable: the undo window holds
    assert after == before  # no object of it written over or deleted


async def test_a_batch_that_fails_for_good_fails_its_files_by_name(
    database_url: str, redis_url: str, tmp_path: Path
) -> None:
    root = tmp_path / "src"
    made = photos(root, 3)
    with memory_store() as memory:
        async with media_env(database_url, redis_url, memory, settings=SETTINGS) as env:
            await env.policies.update(
                {
                    "ingest_profiles": {
                        "catalog": {"watermark": {"logo": "memory://media/no/logo.png"}}
                    }
                }
            )
            status = await ingest_all(env, root)
            rows = await checkpoint(env)
    assert status.failed_by_code == {"logo_missing": len(made)}
    assert {row["batch_id"] for row in rows.values()} == {None}
    assert {row["attempts"] for row in rows.values()} == {0}  # given back: nothing crashed


async def test_files_whose_batch_job_ended_without_them_are_stranded_and_retried(
    database_url: str, redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "src"
    photos(root, 5)
    with memory_store() as memory:
        async with media_env(
            database_url, redis_url, memory, settings=SETTINGS, kinds=["ingest.scan"]
        ) as env:
            ingest = IngestRepository(env.pool)
            run = await start_ingest(env, root, batch_size=2)
            await wait_scanned(env, run)
            async with env.pool.connection() as conn:
                await conn.execute(
                    "UPDATE jobs SET state = 'cancelled', finished_at = now() "
                    "WHERE kind = 'ingest.batch'"
                )
            assert await ingest.stranded(run.id) == 5
            # A top-up queues none of them (unchanged), and says they are stranded.
            top_up = await start_ingest(env, root, batch_size=2)
            await wait_scanned(env, top_up)
            assert await ingest.source_stranded(top_up) == (5, 0)
            assert await ingest.source_stranded(run) == (5, 5)
            assert await _follow(ingest, top_up, json_lines=True) == 0
            said = (
                f"5 files of {top_up.source_uri} from earlier runs are stranded (their batch "
                f"jobs ended without them): mediajobs ingest retry {top_up.id} --stranded"
            )
            assert said in capsys.readouterr().err
            args = argparse.Namespace(run_id=top_up.id, json=False)
            settings = Settings(database_url=database_url)
            assert await asyncio.to_thread(cmd_ingest_status, args, settings) == 0
            shown = (
                "  + 5 stranded files of this source from other runs (their batch jobs "
                f"ended): mediajobs ingest retry {top_up.id} --stranded"
            )
            assert shown in capsys.readouterr().out
            assert await retry_failed(ingest, env.queue, run) == 5
            assert await ingest.stranded(run.id) == 0
            async with env.pool.connection() as conn:
                queued = await (
                    await conn.execute(
                        "SELECT count(*) AS n FROM jobs WHERE kind = 'ingest.batch' "
                        "AND state = 'queued'"
                    )
                ).fetchone()
    assert queued is not None and queued["n"] == 3  # 5 files in batches of 2


async def test_a_folder_gone_from_the_source_makes_the_batch_wait_not_fail(
    database_url: str, redis_url: str, tmp_path: Path
) -> None:
    root = tmp_path / "src"
    photos(root / "mounted", 2)
    with memory_store() as memory:
        async with media_env(
            database_url, redis_url, memory, settings=SETTINGS, kinds=["ingest.scan"]
        ) as env:
            run = await start_ingest(env, root, batch_size=5)
            await wait_scanned(env, run)
        for path in (root / "mounted").iterdir():
            path.unlink()
        (root / "mounted").rmdir()  # as an unmounted disk looks
        async with media_env(database_url, redis_url, memory, settings=SETTINGS) as env:

            async def waiting() -> bool:
                async with env.pool.connection() as conn:
                    job = await (
                        await conn.execute(
                            "SELECT state, attempt, error FROM jobs WHERE kind = 'ingest.batch'"
                        )
                    ).fetchone()
                return job is not None and job["attempt"] >= 1 and job["state"] == "queued"

            await wait_for(waiting, timeout=60)
            rows = await checkpoint(env)
    assert {row["status"] for row in rows.values()} == {"pending"}
    assert {row["attempts"] for row in rows.values()} == {0}  # nothing was its fault


async def test_a_scan_cancelled_while_it_runs_ends_its_run_as_scan_failed(
    database_url: str, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    photos(tmp_path / "src", 1)

    async def cancelled(source: Any) -> AsyncIterator[Any]:
        raise JobCancelled("the job was cancelled")
        yield  # an async generator, as scan_source is

    monkeypatch.setattr(ingest_handlers, "scan_source", cancelled)
    with memory_store() as memory:
        async with media_env(database_url, redis_url, memory, settings=SETTINGS) as env:
            run = await start_ingest(env, tmp_path / "src")
            ingest = IngestRepository(env.pool)

            async def ended() -> bool:
                found = await ingest.get_run(run.id)
                return found is not None and found.state != "scanning"

            # Not retried: the run says so at once, without waiting for its last attempt.
            await wait_for(ended, timeout=30)
            found = await ingest.get_run(run.id)
    assert found is not None and found.state == "scan_failed"
    assert found.error == {"code": "cancelled", "message": "the job was cancelled"}
