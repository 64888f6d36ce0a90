"""The bulk-ingest checkpoint in Postgres (``db/ingest.py``, migration 0008) and the media
rows ingest writes (``MediaRepository.upsert_ingested``): a re-scan writes nothing, a
changed file comes back with its media id, batch outcomes are fenced by the batch id, the
trigger-kept counters equal a real count, and ``status`` never reads the run's file rows."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass, replace
from typing import Any
from unittest.mock import ANY

import pytest

from mediajobs.db import ingest_sql
from mediajobs.db.ingest import (
    FileOutcome,
    IngestFile,
    IngestRepository,
    IngestRun,
    IngestStatus,
    SourceOverlaps,
    SourceOwnedElsewhere,
    batches_needed,
)
from mediajobs.db.media import IngestedMedia, MediaRepository, MediaStatus
from mediajobs.db.pool import Pool
from mediajobs.ingest.runs import start_run
from mediajobs.queue.queue import JobQueue

SOURCE = "file:///srv/library"


@dataclass(frozen=True, slots=True)
class Scanned:
    """The scan's ``ScannedFile`` shape (``mediajobs.ingest.scan``), kept here so this test
    does not depend on the scan package."""

    path: str
    size: int
    mtime_ns: int
    etag: str | None = None


@pytest.fixture
def repo(pool: Pool) -> IngestRepository:
    return IngestRepository(pool)


async def scan(
    repo: IngestRepository, run: IngestRun, files: list[Scanned], batch: uuid.UUID | None = None
) -> list[str]:
    """Record ``files`` as one scan batch whose written files all go into ``batch`` (a new
    id when None); returns the paths written, sorted."""
    batch = batch or uuid.uuid4()
    async with repo.transaction() as conn:
        ids = [batch] * batches_needed(len(files), run.batch_size)
        used = await repo.record_scanned(conn, run, files, ids)
        rows = await (
            await conn.execute(
                "SELECT path FROM ingest_files WHERE batch_id = %s ORDER BY path", (batch,)
            )
        ).fetchall()
    assert used == ([(batch, len(rows))] if rows else [])
    return [row["path"] for row in rows]


async def files_by_path(pool: Pool, source_id: uuid.UUID) -> dict[str, IngestFile]:
    async with pool.connection() as conn:
        rows = await (
            await conn.execute(
                f"SELECT {ingest_sql.FILE_COLUMNS} FROM ingest_files AS f WHERE source_id = %s",
                (source_id,),
            )
        ).fetchall()
    return {row["path"]: IngestFile.from_row(row) for row in rows}


async def counters_match_a_real_count(pool: Pool) -> dict[tuple[uuid.UUID, str, str], int]:
    """The trigger-kept counters per (run, status, error code: '' unless failed), zeros
    dropped, after asserting they equal a count(*) of the files."""
    async with pool.connection() as conn:
        kept = await (
            await conn.execute(
                "SELECT run_id, status, error_code, files FROM ingest_counts WHERE files <> 0"
            )
        ).fetchall()
        real = await (
            await conn.execute(
                """
                SELECT run_id, status,
                       CASE WHEN status = 'failed' THEN coalesce(error_code, '') ELSE '' END
                           AS error_code,
                       count(*) AS files
                FROM ingest_files GROUP BY 1, 2, 3
                """
            )
        ).fetchall()
    kept_map = {(r["run_id"], str(r["status"]), r["error_code"]): int(r["files"]) for r in kept}
    real_map = {(r["run_id"], str(r["status"]), r["error_code"]): int(r["files"]) for r in real}
    assert kept_map == real_map
    return kept_map


async def start(pool: Pool, repo: IngestRepository, uri: str, owner: str) -> IngestRun:
    """A run of ``uri`` as ``ingest run`` starts one: with its scan job, queued."""
    return await start_run(
        repo, JobQueue(pool), uri=uri, owner_id=owner, profile="catalog", batch_size=32
    )


async def queued_job(pool: Pool, state: str = "queued") -> uuid.UUID:
    """A row in ``jobs`` (an ``ingest.batch`` job in ``state``) for files to name."""
    job_id = uuid.uuid4()
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO jobs (id, kind, owner_id, state) VALUES (%s, 'ingest.batch', 'ada', %s)",
            (job_id, state),
        )
    return job_id


async def test_a_source_is_made_once_and_belongs_to_its_first_owner(
    repo: IngestRepository, pool: Pool
) -> None:
    first = await start(pool, repo, SOURCE, "ada")
    second = await repo.open_run(SOURCE, "ada", "catalog", 8)
    assert first.source_id == second.source_id and first.id != second.id
    assert (second.source_uri, second.state, second.batch_size) == (SOURCE, "scanning", 8)
    assert (second.scanned, second.queued, second.scan_job_id, second.error) == (0, 0, None, None)
    with pytest.raises(SourceOwnedElsewhere) as caught:
        await repo.open_run(SOURCE, "sam", "catalog", 32)
    assert caught.value.code == "source_owned_elsewhere"
    with pytest.raises(ValueError, match="profile"):
        await repo.open_run("file:///other", "ada", "Catalog", 32)
    with pytest.raises(ValueError, match="batch_size"):
        await repo.open_run("file:///other", "ada", "catalog", 1001)

    assert await repo.get_run(first.id) == replace(first, scan_job_id=ANY, scan_job=ANY)
    assert await repo.get_run(first.id, owner_id="sam") is None
    other = await repo.open_run("s3://bucket/photos/", "sam", "catalog", 32)
    assert await repo.latest_run(owner_id="ada") == second
    assert await repo.latest_run() == other
    assert await repo.latest_run(owner_id="nobody") is None


async def test_a_rescan_of_unchanged_files_returns_nothing_and_writes_nothing(
    repo: IngestRepository, pool: Pool
) -> None:
    run = await repo.open_run(SOURCE, "ada", "catalog", 32)
    files = [Scanned(f"d/{n:03}.jpg", 1000 + n, 10**18 + n) for n in range(50)]
    files.append(Scanned("ünïcode/日本.png", 5, 7, None))
    files.append(Scanned("bucket/key.webp", 5, 7, '"etag-1"'))
    files.append(Scanned("d/000.jpg", 1, 1))  # listed twice: the first counts
    assert await scan(repo, run, files) == sorted(f.path for f in files[:-1])
    before = await files_by_path(pool, run.source_id)
    assert len(before) == 52 and before["d/000.jpg"].size == 1000
    assert all(f.status is IngestStatus.PENDING and f.run_id == run.id for f in before.values())
    assert len({f.media_id for f in before.values()}) == 52
    assert all(f.media_id.version == 4 for f in before.values())

    again = await repo.open_run(SOURCE, "ada", "catalog", 32)
    assert await scan(repo, again, files) == []
    after = await files_by_path(pool, run.source_id)
    assert after == before  # not even updated_at moved
    assert await scan(repo, again, []) == []
    await counters_match_a_real_count(pool)


async def test_a_changed_file_comes_back_with_its_media_id_and_a_failed_one_does_not(
    repo: IngestRepository, pool: Pool
) -> None:
    run = await repo.open_run(SOURCE, "ada", "catalog", 32)
    files = [Scanned("a.jpg", 10, 100), Scanned("b.jpg", 10, 100), Scanned("c.tif", 10, 100, "e")]
    batch = uuid.uuid4()
    await scan(repo, run, files, batch)
    started = await repo.start_batch(batch)
    assert started is not None
    async with repo.transaction() as conn:
        await repo.finish_batch(
            conn,
            batch,
            [
                FileOutcome("a.jpg", IngestStatus.INDEXED, sha256="aa"),
                FileOutcome("b.jpg", IngestStatus.FAILED, "corrupt_image", "truncated"),
                FileOutcome("c.tif", IngestStatus.INDEXED, sha256="cc"),
            ],
        )
    before = await files_by_path(pool, run.source_id)

    rerun = await repo.open_run(SOURCE, "ada", "catalog", 32)
    changed = [
        Scanned("a.jpg", 11, 100),  # size changed
        Scanned("b.jpg", 10, 100),  # failed, unchanged: stays failed
        Scanned("c.tif", 10, 100, "e2"),  # etag changed
        Scanned("d.png", 1, 1),  # new
    ]
    again = uuid.uuid4()
    assert await scan(repo, rerun, changed, again) == ["a.jpg", "c.tif", "d.png"]
    after = await files_by_path(pool, run.source_id)
    for path in ("a.jpg", "c.tif"):
        assert after[path].media_id == before[path].media_id
        assert (after[path].status, after[path].run_id) == (IngestStatus.PENDING, rerun.id)
        assert (after[path].attempts, after[path].error_code, after[path].batch_id) == (
            0,
            None,
            again,
        )
    assert (after["a.jpg"].size, after["c.tif"].etag) == (11, "e2")
    assert after["b.jpg"] == before["b.jpg"]
    assert after["d.png"].run_id == rerun.id
    kept = await counters_match_a_real_count(pool)
    assert kept == {
        (rerun.id, "pending", ""): 3,
        (run.id, "failed", "corrupt_image"): 1,
    }


async def test_start_batch_counts_an_attempt_on_open_files_only(
    repo: IngestRepository, pool: Pool
) -> None:
    run = await repo.open_run(SOURCE, "ada", "catalog", 32)
    await scan(repo, run, [Scanned(p, 1, 1) for p in ("x.jpg", "y.jpg", "z.jpg")])
    batch = uuid.uuid4()
    async with repo.transaction() as conn:
        await repo.assign_batches(conn, run.source_id, [(batch, ["z.jpg", "x.jpg", "y.jpg"])])
        await conn.execute("UPDATE ingest_files SET status = 'processed' WHERE path = 'y.jpg'")
        # ai_done comes after indexed (image understanding finished it): not open
        await conn.execute("UPDATE ingest_files SET status = 'ai_done' WHERE path = 'z.jpg'")
    first = await repo.start_batch(batch)
    assert first is not None
    started_run, started = first
    assert started_run.id == run.id
    assert [(f.path, f.attempts) for f in started] == [("x.jpg", 1), ("y.jpg", 1)]
    async with repo.transaction() as conn:
        assert (
            await repo.finish_batch(
                conn, batch, [FileOutcome("x.jpg", IngestStatus.INDEXED, sha256="x")]
            )
            == 1
        )
    second = await repo.start_batch(batch)
    assert second is not None
    assert [(f.path, f.attempts) for f in second[1]] == [("y.jpg", 2)]
    async with repo.transaction() as conn:
        assert await repo.fail_batch(conn, batch, "decoder_crashed", "killed twice") == 1
    assert await repo.start_batch(batch) is None
    assert await repo.start_batch(uuid.uuid4()) is None
    rows = await files_by_path(pool, run.source_id)
    assert rows["x.jpg"].attempts == 1  # finished: not counted again
    assert (rows["y.jpg"].status, rows["y.jpg"].error_code, rows["y.jpg"].batch_id) == (
        IngestStatus.FAILED,
        "decoder_crashed",
        None,
    )
    assert (rows["z.jpg"].status, rows["z.jpg"].attempts) == (IngestStatus.AI_DONE, 0)
    await counters_match_a_real_count(pool)


async def test_finish_batch_leaves_a_file_a_rescan_moved_and_defers_to_a_new_batch(
    repo: IngestRepository, pool: Pool
) -> None:
    run = await repo.open_run(SOURCE, "ada", "catalog", 32)
    await scan(repo, run, [Scanned(p, 1, 1) for p in ("a.jpg", "b.jpg", "c.jpg", "d.jpg")])
    old = uuid.uuid4()
    async with repo.transaction() as conn:
        await repo.assign_batches(
            conn, run.source_id, [(old, ["a.jpg", "b.jpg", "c.jpg", "d.jpg"])]
        )
    started = await repo.start_batch(old)
    assert started is not None and started[1][0].attempts == 1

    # Meanwhile a rescan finds a.jpg changed and gives it a batch of its own.
    rescan = await repo.open_run(SOURCE, "ada", "catalog", 32)
    moved = uuid.uuid4()
    async with repo.transaction() as conn:
        assert await repo.record_scanned(conn, rescan, [Scanned("a.jpg", 2, 2)], [moved]) == [
            (moved, 1)
        ]

    deferred_to = uuid.uuid4()
    async with repo.transaction() as conn:
        changed = await repo.finish_batch(
            conn,
            old,
            [
                FileOutcome("a.jpg", IngestStatus.INDEXED, sha256="stale"),
                FileOutcome("b.jpg", IngestStatus.INDEXED, sha256="bb"),
                FileOutcome("c.jpg", IngestStatus.FAILED, "corrupt_image", "bad header"),
                FileOutcome(
                    "d.jpg", IngestStatus.PENDING, size=5, mtime_ns=6, batch_id=deferred_to
                ),
            ],
        )
    assert changed == 3
    rows = await files_by_path(pool, run.source_id)
    a, b, c, d = (rows[p] for p in ("a.jpg", "b.jpg", "c.jpg", "d.jpg"))
    assert (a.status, a.batch_id, a.sha256, a.size, a.run_id) == (
        IngestStatus.PENDING,
        moved,
        None,
        2,
        rescan.id,
    )
    assert (b.status, b.batch_id, b.sha256, b.error_code) == (
        IngestStatus.INDEXED,
        None,
        "bb",
        None,
    )
    assert b.processed_at is not None
    assert (c.status, c.batch_id, c.error_code, c.error_message, c.processed_at) == (
        IngestStatus.FAILED,
        None,
        "corrupt_image",
        "bad header",
        None,
    )
    # Deferred: new size/mtime, the new batch, and the attempt given back (never decoded).
    assert (d.status, d.batch_id, d.size, d.mtime_ns, d.attempts) == (
        IngestStatus.PENDING,
        deferred_to,
        5,
        6,
        0,
    )
    again = await repo.start_batch(deferred_to)
    assert again is not None and [f.path for f in again[1]] == ["d.jpg"]
    await counters_match_a_real_count(pool)


def test_an_outcome_must_say_what_its_status_needs() -> None:
    with pytest.raises(ValueError, match="error_code"):
        FileOutcome("a", IngestStatus.FAILED)
    with pytest.raises(ValueError, match="error_code"):
        FileOutcome("a", IngestStatus.INDEXED, error_code="x")
    with pytest.raises(ValueError, match="batch_id"):
        FileOutcome("a", IngestStatus.PENDING)
    with pytest.raises(ValueError, match="status"):
        FileOutcome("a", IngestStatus.UPLOADED)


async def fail_files(repo: IngestRepository, run: IngestRun, failures: dict[str, str]) -> None:
    """Scan ``failures``' paths into ``run``, batch them and fail each with its code."""
    batch = uuid.uuid4()
    await scan(repo, run, [Scanned(p, 1, 1) for p in failures], batch)
    await repo.start_batch(batch)
    outcomes = [
        FileOutcome(p, IngestStatus.FAILED, code, f"{code} at {p}") for p, code in failures.items()
    ]
    async with repo.transaction() as conn:
        assert await repo.finish_batch(conn, batch, outcomes) == len(failures)


async def open_files(
    repo: IngestRepository, run: IngestRun, batch: uuid.UUID | None, paths: list[str]
) -> None:
    """Scan ``paths`` into ``run`` and put them in ``batch`` (None: in no batch), then
    count an attempt on them as a batch start would."""
    async with repo.transaction() as conn:
        ids = [] if batch is None else [batch]
        recorded = await repo.record_scanned(conn, run, [Scanned(p, 1, 1) for p in paths], ids)
        assert recorded == [(batch, len(paths))]
    if batch is not None:
        await repo.start_batch(batch)


async def requeue(
    repo: IngestRepository,
    pool: Pool,
    run: IngestRun,
    *,
    code: str | None = None,
    stranded_only: bool = False,
    limit: int,
) -> list[str]:
    """One retry page as the caller does it: retried files go into a new queued job, in the
    same transaction. Returns the paths retried."""
    job = await queued_job(pool)
    async with repo.transaction() as conn:
        paths = await repo.retry_failed(
            conn, run, code=code, stranded_only=stranded_only, limit=limit
        )
        await repo.assign_batches(conn, run.source_id, [(job, paths)])
    return paths


async def test_retry_failed_requeues_failed_then_stranded_files_in_pages(
    repo: IngestRepository, pool: Pool
) -> None:
    run = await repo.open_run(SOURCE, "ada", "catalog", 32)
    await fail_files(
        repo, run, {"c.jpg": "corrupt_image", "a.jpg": "corrupt_image", "b.jpg": "decoder_crashed"}
    )
    # Open files: in a queued and in a running job (waiting: not stranded), in a job that
    # failed or was cancelled (by SQL), in a job gone from `jobs`, and in no batch at all.
    await open_files(repo, run, await queued_job(pool), ["q.jpg"])
    await open_files(repo, run, await queued_job(pool, "running"), ["r.jpg"])
    failed_job, cancelled_job = await queued_job(pool), await queued_job(pool)
    await open_files(repo, run, failed_job, ["s1.jpg"])
    await open_files(repo, run, cancelled_job, ["s2.jpg"])
    await open_files(repo, run, uuid.uuid4(), ["s3.jpg"])
    await open_files(repo, run, None, ["s4.jpg"])
    async with pool.connection() as conn:
        await conn.execute("UPDATE jobs SET state = 'failed' WHERE id = %s", (failed_job,))
        await conn.execute("UPDATE jobs SET state = 'cancelled' WHERE id = %s", (cancelled_job,))
        await conn.execute("UPDATE ingest_files SET status = 'processed' WHERE path = 's2.jpg'")
        await conn.execute("UPDATE ingest_files SET status = 'uploaded' WHERE path = 's3.jpg'")
    other = await repo.open_run("file:///elsewhere", "ada", "catalog", 32)
    await fail_files(repo, other, {"z.jpg": "corrupt_image"})
    await open_files(repo, other, None, ["y.jpg"])
    assert (await repo.stranded(run.id), await repo.stranded(other.id)) == (4, 1)
    before = await files_by_path(pool, run.source_id)

    # Through a run of an owner the source no longer has: nothing, with or without a code.
    gone = replace(run, owner_id="mallory")
    assert await requeue(repo, pool, gone, limit=10) == []
    assert await requeue(repo, pool, gone, code="corrupt_image", limit=10) == []

    # With a code: only that code's failed files, by path, a page at a time; no stranded.
    assert await requeue(repo, pool, run, code="corrupt_image", limit=1) == ["a.jpg"]
    assert await requeue(repo, pool, run, code="corrupt_image", limit=1) == ["c.jpg"]
    assert await requeue(repo, pool, run, code="corrupt_image", limit=1) == []
    status = await repo.status(run.id)
    assert status is not None and status.failed_by_code == {"decoder_crashed": 1}
    assert await repo.stranded(run.id) == 4

    # Without: the failed files first, then the stranded ones fill the page, by path.
    pages = [await requeue(repo, pool, run, limit=2) for _ in range(4)]
    assert pages == [["b.jpg", "s1.jpg"], ["s2.jpg", "s3.jpg"], ["s4.jpg"], []]
    rows = await files_by_path(pool, run.source_id)
    for path in ("a.jpg", "b.jpg", "c.jpg", "s1.jpg", "s2.jpg", "s3.jpg", "s4.jpg"):
        row = rows[path]
        assert (row.status, row.attempts, row.error_code, row.error_message) == (
            IngestStatus.PENDING,
            0,
            None,
            None,
        ), path
        assert row.batch_id is not None and row.batch_id != before[path].batch_id
        assert row.media_id == before[path].media_id
    for path in ("q.jpg", "r.jpg"):
        assert rows[path] == before[path]
    assert await repo.stranded(run.id) == 0
    # The other run's failed and stranded files are its own.
    assert await repo.stranded(other.id) == 1
    assert (await files_by_path(pool, other.source_id))["z.jpg"].status is IngestStatus.FAILED
    # Stranded files alone: the failed one stays failed.
    assert await requeue(repo, pool, other, stranded_only=True, limit=10) == ["y.jpg"]
    assert await repo.stranded(other.id) == 0
    assert (await files_by_path(pool, other.source_id))["z.jpg"].status is IngestStatus.FAILED
    with pytest.raises(ValueError, match="limit"):
        async with repo.transaction() as conn:
            await repo.retry_failed(conn, run, limit=0)
    with pytest.raises(ValueError, match="stranded"):
        async with repo.transaction() as conn:
            await repo.retry_failed(conn, run, code="corrupt_image", stranded_only=True)
    kept = await counters_match_a_real_count(pool)
    assert kept == {
        (run.id, "pending", ""): 9,
        (other.id, "failed", "corrupt_image"): 1,
        (other.id, "pending", ""): 1,
    }


async def test_failed_files_pages_by_path(repo: IngestRepository) -> None:
    run = await repo.open_run(SOURCE, "ada", "catalog", 32)
    codes = {f"f{n:02}.jpg": ("corrupt_image" if n % 3 else "file_too_large") for n in range(25)}
    await fail_files(repo, run, codes)
    pages: list[list[str]] = []
    after: str | None = None
    while page := await repo.failed_files(run.source_id, after=after, limit=10):
        pages.append([f.path for f in page])
        after = page[-1].path
    assert [len(p) for p in pages] == [10, 10, 5]
    assert [p for page in pages for p in page] == sorted(codes)
    first = await repo.failed_files(run.source_id, limit=1)
    assert (first[0].error_code, first[0].error_message) == (
        "file_too_large",
        "file_too_large at f00.jpg",
    )
    large = await repo.failed_files(run.source_id, code="file_too_large", after="f00.jpg")
    assert [f.path for f in large] == [
        p for p, c in sorted(codes.items()) if c == "file_too_large"
    ][1:]


async def test_status_counts_every_status_and_failures_by_code(
    repo: IngestRepository,
) -> None:
    run = await repo.open_run(SOURCE, "ada", "catalog", 32)
    await fail_files(repo, run, {"a": "corrupt_image", "b": "corrupt_image", "c": "empty_file"})
    batch = uuid.uuid4()
    await scan(repo, run, [Scanned(p, 1, 1) for p in ("d", "e", "f")], batch)
    async with repo.transaction() as conn:
        await repo.add_scan_counts(conn, run.id, scanned=6, skipped=2, errors=1, queued=6)
    async with repo.transaction() as conn:
        await repo.finish_batch(conn, batch, [FileOutcome("d", IngestStatus.INDEXED, sha256="d")])
    await repo.finish_scan(run.id)

    status = await repo.status(run.id)
    assert status is not None
    assert status.counts == {
        "pending": 2,
        "ai_done": 0,
        "processed": 0,
        "uploaded": 0,
        "indexed": 1,
        "failed": 3,
    }
    assert status.failed_by_code == {"corrupt_image": 2, "empty_file": 1}
    assert (status.total, status.done) == (6, 4)
    assert (status.run.state, status.run.scanned, status.run.skipped) == ("scanned", 6, 2)
    assert (status.run.scan_errors, status.run.queued) == (1, 6)
    assert status.run.scan_finished_at is not None
    assert status.last_update == status.run.updated_at
    assert status.last_update is not None and status.last_update >= run.updated_at
    assert await repo.status(run.id, owner_id="sam") is None
    assert await repo.status(uuid.uuid4()) is None

    await repo.finish_scan(run.id, error={"code": "source_unreadable", "message": "gone"})
    failed = await repo.get_run(run.id)
    assert failed is not None
    assert (failed.state, failed.error) == (
        "scan_failed",
        {"code": "source_unreadable", "message": "gone"},
    )
    job = uuid.uuid4()
    async with repo.transaction() as conn:
        await repo.set_scan_job(conn, run.id, job)
    with_job = await repo.get_run(run.id)
    assert with_job is not None and with_job.scan_job_id == job


Node = tuple[str, str | None, str | None]


def plan_nodes(plan: dict[str, Any]) -> list[Node]:
    """Every node of an EXPLAIN (FORMAT JSON) plan: (node type, relation, index)."""
    found = [(plan["Node Type"], plan.get("Relation Name"), plan.get("Index Name"))]
    for child in plan.get("Plans", []):
        found.extend(plan_nodes(child))
    return found


async def explain(conn: Any, statement: str, params: Any) -> list[Node]:
    """The nodes of ``statement``'s plan with ``params`` (not run)."""
    row = await (await conn.execute("EXPLAIN (FORMAT JSON) " + statement, params)).fetchone()
    assert row is not None
    plan = row["QUERY PLAN"]
    plan = json.loads(plan) if isinstance(plan, str) else plan
    return plan_nodes(plan[0]["Plan"])


async def test_status_at_200k_files_reads_only_the_counters(
    repo: IngestRepository, pool: Pool
) -> None:
    run = await repo.open_run(SOURCE, "ada", "catalog", 32)
    async with pool.connection() as conn:
        # 200k files of the run: 1 in 100 failed (3 codes), 1 in 4 pending, the rest indexed.
        await conn.execute(
            """
            INSERT INTO ingest_files (source_id, path, media_id, run_id, size, mtime_ns,
                                      status, error_code)
            SELECT %(source)s, 'p/' || n, gen_random_uuid(), %(run)s, n, n,
                   CASE WHEN n %% 100 = 0 THEN 'failed' WHEN n %% 4 = 1 THEN 'pending'
                        ELSE 'indexed' END::ingest_status,
                   CASE WHEN n %% 100 = 0 THEN 'code_' || (n %% 3) END
            FROM generate_series(1, 200000) AS n
            """,
            {"source": run.source_id, "run": run.id},
        )
        await conn.execute("ANALYZE ingest_files")
        await conn.execute("ANALYZE ingest_counts")
        nodes = await explain(conn, ingest_sql.RUN_COUNTS, (run.id,))
    # Only the counters (a handful of rows per run: a seq scan of them is fine).
    assert {relation for _, relation, _ in nodes} == {"ingest_counts"}, nodes
    status = await repo.status(run.id)
    assert status is not None
    assert status.total == 200_000
    assert status.counts["failed"] == 2000
    assert status.counts["pending"] == 50_000  # n % 4 = 1 never meets n % 100 = 0
    assert status.failed_by_code == {"code_0": 666, "code_1": 667, "code_2": 667}
    await counters_match_a_real_count(pool)


async def test_a_page_of_failed_files_walks_the_index_in_path_order_at_20k(
    repo: IngestRepository, pool: Pool
) -> None:
    run = await repo.open_run(SOURCE, "ada", "catalog", 32)
    earlier = await repo.open_run(SOURCE, "ada", "catalog", 32)
    elsewhere = await repo.open_run("file:///srv/other", "ada", "catalog", 32)
    async with pool.connection() as conn:
        # 60k files of the run, a third failed (4 codes, paths in no order of their codes),
        # 20k failed files of another run of the source, and 20k of another source.
        await conn.execute(
            """
            INSERT INTO ingest_files (source_id, path, media_id, run_id, size, mtime_ns,
                                      status, error_code)
            SELECT CASE WHEN n <= 80000 THEN %(source)s ELSE %(elsewhere_source)s END,
                   md5(n::text), gen_random_uuid(),
                   CASE WHEN n <= 60000 THEN %(run)s
                        WHEN n <= 80000 THEN %(earlier)s ELSE %(elsewhere)s END, n, n,
                   CASE WHEN n %% 3 = 0 OR n > 60000 THEN 'failed' ELSE 'indexed' END
                       ::ingest_status,
                   CASE WHEN n %% 3 = 0 OR n > 60000 THEN 'code_' || (n %% 4) END
            FROM generate_series(1, 100000) AS n
            """,
            {
                "source": run.source_id,
                "run": run.id,
                "earlier": earlier.id,
                "elsewhere_source": elsewhere.source_id,
                "elsewhere": elsewhere.id,
            },
        )
        await conn.execute("ANALYZE ingest_files")
        by_path = ("Index Scan", "ingest_files", "ingest_files_source_failed_path_idx")
        for after in ("", "8"):
            params = {"source": run.source_id, "after": after, "limit": 1000, "code": None}
            nodes = await explain(conn, ingest_sql.FAILED_FILES_ALL, params)
            assert not [node for node, _, _ in nodes if "Sort" in node], nodes
            assert by_path in nodes, nodes
        # A retry page walks it too (its only sort: the page it picked, by path).
        retry = {"source": run.source_id, "run": run.id, "owner": run.owner_id, "limit": 1000}
        retry["code"] = None
        assert by_path in await explain(conn, ingest_sql.RETRY_PAGE_ALL, retry)
        code_params = {"source": run.source_id, "after": "", "limit": 1000, "code": "code_1"}
        nodes = await explain(conn, ingest_sql.FAILED_FILES_CODE, code_params)
        assert not [node for node, _, _ in nodes if "Sort" in node], nodes
        assert ("Index Scan", "ingest_files", "ingest_files_source_failed_idx") in nodes, nodes
    page = await repo.failed_files(run.source_id, after="8", limit=1000)
    async with pool.connection() as conn:
        expected = await (
            await conn.execute(
                "SELECT path FROM ingest_files WHERE source_id = %s AND status = 'failed'"
                " AND path > '8' ORDER BY path LIMIT 1000",
                (run.source_id,),
            )
        ).fetchall()
    assert [f.path for f in page] == [row["path"] for row in expected]
    assert len(page) == 1000 and {f.run_id for f in page} == {run.id, earlier.id}
    assert await repo.source_failures(run.source_id) == {
        f"code_{k}": 20000 // 4 + 20000 // 4 for k in range(4)
    }


async def test_failures_of_earlier_runs_are_the_sources_to_report_and_retry(
    repo: IngestRepository, pool: Pool
) -> None:
    """A rescan leaves an unchanged failed file with the run that failed it: the newest
    run's report and retry still find it, and a retry moves it (and its count) there."""
    first = await repo.open_run(SOURCE, "ada", "catalog", 32)
    await fail_files(repo, first, {"a.jpg": "corrupt_image", "b.jpg": "decoder_crashed"})
    rescan = await repo.open_run(SOURCE, "ada", "catalog", 32)
    assert await scan(repo, rescan, [Scanned("a.jpg", 1, 1), Scanned("b.jpg", 1, 1)]) == []
    status = await repo.status(rescan.id)
    assert status is not None and status.counts["failed"] == 0
    assert await repo.source_failures(rescan.source_id) == {
        "corrupt_image": 1,
        "decoder_crashed": 1,
    }
    assert [f.path for f in await repo.failed_files(rescan.source_id)] == ["a.jpg", "b.jpg"]

    before = await repo.get_run(first.id)
    assert await requeue(repo, pool, rescan, code="decoder_crashed", limit=10) == ["b.jpg"]
    rows = await files_by_path(pool, rescan.source_id)
    assert (rows["b.jpg"].run_id, rows["b.jpg"].status) == (rescan.id, IngestStatus.PENDING)
    assert rows["a.jpg"].run_id == first.id
    kept = await counters_match_a_real_count(pool)
    assert kept == {(first.id, "failed", "corrupt_image"): 1, (rescan.id, "pending", ""): 1}
    after = await repo.get_run(first.id)  # the run the file left moved too
    assert before is not None and after is not None and after.updated_at > before.updated_at


async def test_list_runs_newest_first_with_their_counts(repo: IngestRepository) -> None:
    first = await repo.open_run(SOURCE, "ada", "catalog", 32)
    await fail_files(repo, first, {"a.jpg": "corrupt_image", "b.jpg": "empty_file"})
    await open_files(repo, first, None, ["c.jpg"])
    other = await repo.open_run("s3://bucket/photos/", "sam", "catalog", 32)
    newest = await repo.open_run(SOURCE, "ada", "catalog", 32)
    listed = await repo.list_runs()
    assert [(run.id, total, done, failed) for run, total, done, failed in listed] == [
        (newest.id, 0, 0, 0),
        (other.id, 0, 0, 0),
        (first.id, 3, 2, 2),
    ]
    assert [run.id for run, *_ in await repo.list_runs(owner_id="ada", limit=1)] == [newest.id]
    assert await repo.list_runs(owner_id="nobody") == []
    with pytest.raises(ValueError, match="limit"):
        await repo.list_runs(limit=0)


async def test_a_source_inside_or_around_another_is_refused_for_every_owner(
    repo: IngestRepository, pool: Pool
) -> None:
    await start(pool, repo, "file:///srv/library/2020", "ada")
    await start(pool, repo, "s3://bucket/photos/", "ada")
    refused = [
        ("file:///srv/library", "ada", "file:///srv/library/2020"),  # its parent
        ("file:///srv/library/2020/june", "ada", "file:///srv/library/2020"),  # inside it
        ("file:///", "sam", "file:///srv/library/2020"),  # the root, another owner
        ("s3://bucket/", "ada", "s3://bucket/photos/"),  # the whole bucket
        ("s3://bucket/photos/2021/", "sam", "s3://bucket/photos/"),
    ]
    for uri, owner, other in refused:
        with pytest.raises(SourceOverlaps) as caught:
            await repo.open_run(uri, owner, "catalog", 32)
        assert (caught.value.code, caught.value.other) == ("source_overlaps", other), uri
        assert ("another owner" in str(caught.value)) == (owner != "ada"), uri
        assert ("again" in str(caught.value)) == (owner == "ada"), uri  # no advice to sam
        where = "lies inside" if caught.value.inside else "holds"
        assert str(caught.value).startswith(f"{uri} {where} {other}"), uri
        assert caught.value.inside == (len(uri) > len(other)), uri
    # Neighbours share a prefix of characters, not a folder: they are other sources.
    for uri in ("file:///srv/library/2020-old", "file:///srv/lib", "s3://bucket/photos2/"):
        assert (await repo.open_run(uri, "ada", "catalog", 32)).source_uri == uri
    assert (await repo.open_run("s3://bucket2/", "sam", "catalog", 32)).owner_id == "sam"


async def test_a_source_that_holds_nothing_is_free_for_any_owner_and_any_overlap(
    repo: IngestRepository, pool: Pool
) -> None:
    # A typo'd owner on an empty folder, and a scan of a folder that was not there: their
    # runs found no file, so neither claims its uri nor blocks the folders around it.
    empty = await repo.open_run("file:///srv/library/empty", "adaa", "catalog", 32)
    await repo.finish_scan(empty.id)
    missing = await repo.open_run("s3://bucket/", "ada", "catalog", 32)
    await repo.finish_scan(missing.id, error={"code": "scan_failed", "message": "no bucket"})

    again = await repo.open_run("file:///srv/library/empty", "ada", "catalog", 32)
    assert (again.source_id, again.owner_id) == (empty.source_id, "ada")
    await repo.finish_scan(again.id)
    parent = await start(pool, repo, "file:///srv/library", "sam")
    inside = await start(pool, repo, "s3://bucket/photos/", "sam")
    assert (parent.owner_id, inside.owner_id) == ("sam", "sam")

    # A scanning run holds its source (its files are on their way) ...
    with pytest.raises(SourceOwnedElsewhere):
        await repo.open_run("file:///srv/library", "ada", "catalog", 32)
    with pytest.raises(SourceOverlaps):
        await repo.open_run("s3://bucket/", "ada", "catalog", 32)
    # ... and so does a recorded file once the scan is over.
    await scan(repo, parent, [Scanned("a.jpg", 1, 1)])
    await repo.finish_scan(parent.id)
    with pytest.raises(SourceOwnedElsewhere):
        await repo.open_run("file:///srv/library", "ada", "catalog", 32)
    with pytest.raises(SourceOverlaps):
        await repo.open_run("file:///srv/library/empty", "ada", "catalog", 32)
    # A run whose scan job was cancelled before it began holds nothing.
    await start(pool, repo, "file:///srv/cancelled", "ada")
    with pytest.raises(SourceOwnedElsewhere):
        await repo.open_run("file:///srv/cancelled", "sam", "catalog", 32)
    async with pool.connection() as conn:
        await conn.execute("UPDATE jobs SET state = 'cancelled' WHERE kind = 'ingest.scan'")
    assert (await start(pool, repo, "file:///srv/cancelled", "sam")).owner_id == "sam"


async def test_sources_that_overlapped_before_overlaps_were_refused_run_again(
    repo: IngestRepository, pool: Pool
) -> None:
    outer = await repo.open_run("file:///srv/library", "ada", "catalog", 32)
    await scan(repo, outer, [Scanned("2020/a.jpg", 1, 1)])
    inner = await repo.open_run("file:///srv/elsewhere", "ada", "catalog", 32)
    await scan(repo, inner, [Scanned("b.jpg", 1, 1)])
    await repo.finish_scan(inner.id)
    await repo.finish_scan(outer.id)
    async with pool.connection() as conn:  # inside the other, as an older version allowed
        await conn.execute(
            "UPDATE ingest_sources SET uri = 'file:///srv/library/2020' WHERE id = %s",
            (inner.source_id,),
        )
    for uri in ("file:///srv/library", "file:///srv/library/2020"):
        assert (await repo.open_run(uri, "ada", "catalog", 32)).source_uri == uri


async def test_two_overlapping_sources_claimed_at_once_one_is_refused(
    repo: IngestRepository, pool: Pool
) -> None:
    uris = ["s3://bucket/photos/", "s3://bucket/photos/2021/"] * 4
    claims = await asyncio.gather(
        *(start(pool, repo, uri, "ada") for uri in uris), return_exceptions=True
    )
    won = {claim.source_uri for claim in claims if isinstance(claim, IngestRun)}
    refused = [claim for claim in claims if not isinstance(claim, IngestRun)]
    assert len(won) == 1 and len(refused) == 4, claims
    assert all(isinstance(claim, SourceOverlaps) for claim in refused), refused


async def test_counters_per_code_follow_code_changes_and_deletes(
    repo: IngestRepository, pool: Pool
) -> None:
    run = await repo.open_run(SOURCE, "ada", "catalog", 32)
    await fail_files(repo, run, {"a": "corrupt_image", "b": "corrupt_image", "c": "empty_file"})
    await open_files(repo, run, None, ["d", "e"])
    assert await counters_match_a_real_count(pool) == {
        (run.id, "failed", "corrupt_image"): 2,
        (run.id, "failed", "empty_file"): 1,
        (run.id, "pending", ""): 2,
    }
    async with pool.connection() as conn:
        await conn.execute("UPDATE ingest_files SET error_code = 'empty_file' WHERE path = 'a'")
        await conn.execute("UPDATE ingest_files SET error_code = NULL WHERE path = 'b'")
        # A code on a file that is not failed is not counted as a failure.
        await conn.execute("UPDATE ingest_files SET error_code = 'stray' WHERE path = 'd'")
        await conn.execute("DELETE FROM ingest_files WHERE path IN ('c', 'e')")
    assert await counters_match_a_real_count(pool) == {
        (run.id, "failed", "empty_file"): 1,
        (run.id, "failed", ""): 1,
        (run.id, "pending", ""): 1,
    }
    status = await repo.status(run.id)
    assert status is not None
    assert status.failed_by_code == {"empty_file": 1, "unknown": 1}
    assert (status.counts["failed"], status.counts["pending"], status.total) == (2, 1, 3)
    assert await repo.source_failures(run.source_id) == {"empty_file": 1, "unknown": 1}
    # "unknown", as status shows it, retries the failed file without a code, and only it.
    async with repo.transaction() as conn:
        assert await repo.retry_failed(conn, run, code="unknown") == ["b"]
    assert await repo.source_failures(run.source_id) == {"empty_file": 1}


async def test_open_run_in_a_callers_transaction_rolls_back_with_it(
    repo: IngestRepository, pool: Pool
) -> None:
    class Abandoned(Exception):
        pass

    with pytest.raises(Abandoned):
        async with repo.transaction() as conn:
            run = await repo.open_run(SOURCE, "ada", "catalog", 32, conn=conn)
            await repo.set_scan_job(conn, run.id, uuid.uuid4())
            assert await repo.get_run(run.id) is None  # not committed yet
            raise Abandoned
    assert await repo.get_run(run.id) is None
    async with pool.connection() as conn:
        row = await (await conn.execute("SELECT count(*) AS n FROM ingest_sources")).fetchone()
    assert row is not None and row["n"] == 0  # the source made with it is gone too

    job = await queued_job(pool)
    async with repo.transaction() as conn:
        run = await repo.open_run(SOURCE, "ada", "catalog", 32, conn=conn)
        await repo.set_scan_job(conn, run.id, job)
        with pytest.raises(SourceOwnedElsewhere):
            await repo.open_run(SOURCE, "sam", "catalog", 32, conn=conn)
        await repo.add_scan_counts(conn, run.id, scanned=1, skipped=0, errors=0, queued=0)
    committed = await repo.get_run(run.id)
    assert committed is not None
    assert (committed.owner_id, committed.scan_job_id) == ("ada", job)
    assert await repo.latest_run(owner_id="sam") is None


def ingested(media_id: uuid.UUID, owner: str, *, version: int = 1) -> IngestedMedia:
    return IngestedMedia(
        id=media_id,
        owner_id=owner,
        purpose="catalog",
        source_locator=f"memory://b/catalog/original/2026/0{version}/{media_id}.jpg",
        original_filename="beach.jpg",
        detected_type="image/jpeg",
        bytes=1000 * version,
        width=40 * version,
        height=30,
        variants={
            "thumbnail": {"locator": f"memory://b/catalog/thumbnail/{media_id}.webp", "width": 4}
        },
        blur_data_url="data:image/webp;base64,AAAA",
        exif={"Model": f"v{version}"},
        gps={"lat": 1.5} if version == 1 else None,
        sha256=f"{version:064x}",
    )


async def test_upsert_ingested_inserts_updates_and_leaves_deleted_or_others_items(
    pool: Pool,
) -> None:
    media = MediaRepository(pool)
    fresh, kept, deleted, others = (uuid.uuid4() for _ in range(4))
    async with media.transaction() as conn:
        assert await media.upsert_ingested(conn, []) == {}
        first = await media.upsert_ingested(
            conn, [ingested(fresh, "ada"), ingested(kept, "ada"), ingested(deleted, "ada")]
        )
    assert first == {fresh: None, kept: None, deleted: None}
    row = await media.get(fresh, "ada")
    assert row is not None
    assert (row.status, row.purpose, row.width, row.exif, row.gps) == (
        MediaStatus.READY,
        "catalog",
        40,
        {"Model": "v1"},
        {"lat": 1.5},
    )
    assert row.processed_at is not None
    assert {str(locator) for locator in row.locators()} == {
        row.source_locator,
        f"memory://b/catalog/thumbnail/{fresh}.webp",
    }

    await media.soft_delete(deleted, "ada", undo_window=60)
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO media (id, owner_id, status, source_locator)"
            " VALUES (%s, 'sam', 'ready', %s)",
            (others, f"memory://b/media/sam/{others}"),
        )
    same_source = ingested(kept, "ada")
    async with media.transaction() as conn:
        second = await media.upsert_ingested(
            conn,
            [
                ingested(fresh, "ada", version=2),  # a new version: new locator, returned
                same_source,  # the same locator: None
                ingested(deleted, "ada", version=2),  # deleted: left alone
                ingested(others, "ada", version=2),  # another owner's id: left alone
            ],
        )
    assert second == {fresh: first_locator(fresh), kept: None}
    updated = await media.get(fresh, "ada")
    assert updated is not None
    assert (updated.width, updated.bytes, updated.exif, updated.gps, updated.sha256) == (
        80,
        2000,
        {"Model": "v2"},
        None,
        f"{2:064x}",
    )
    assert updated.source_locator == ingested(fresh, "ada", version=2).source_locator
    still_deleted = await media.get(deleted, "ada")
    assert still_deleted is not None
    assert (still_deleted.status, still_deleted.width) == (MediaStatus.DELETED, 40)
    theirs = await media.get(others)
    assert theirs is not None and (theirs.owner_id, theirs.width) == ("sam", None)
    with pytest.raises(ValueError, match="more than once"):
        async with media.transaction() as conn:
            await media.upsert_ingested(conn, [ingested(fresh, "ada"), ingested(fresh, "ada")])


def first_locator(media_id: uuid.UUID) -> str:
    return ingested(media_id, "ada").source_locator


async def test_two_scans_racing_over_one_source_queue_each_path_once(
    repo: IngestRepository, pool: Pool
) -> None:
    first = await repo.open_run(SOURCE, "ada", "catalog", 32)
    second = await repo.open_run(SOURCE, "ada", "catalog", 32)
    files = [Scanned(f"r/{n}.jpg", n, n) for n in range(100)]
    async with repo.transaction() as conn:
        batches = [uuid.uuid4() for _ in range(batches_needed(len(files), first.batch_size))]
        assert await repo.record_scanned(conn, first, files, batches) == list(
            zip(batches, [32, 32, 32, 4], strict=True)
        )
        # The second scan does not see the first's rows yet: it waits on them, then finds
        # them equal and queues nothing.
        racing = asyncio.create_task(scan(repo, second, files))
        await asyncio.sleep(0.3)
        assert not racing.done()
    assert await asyncio.wait_for(racing, 10) == []
    rows = await files_by_path(pool, first.source_id)
    assert {f.run_id for f in rows.values()} == {first.id}
    await counters_match_a_real_count(pool)
