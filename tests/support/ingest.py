"""Bulk ingest steps the tests share: start a run of a directory through an in-process
``MediaEnv`` and wait for it to be scanned or finished."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mediajobs.db.ingest import IngestRepository, IngestRun, RunStatus
from mediajobs.ingest.runs import is_finished, start_run
from mediajobs.ingest.source import parse_source
from tests.support.media import MediaEnv
from tests.support.waiting import wait_for

OWNER = "alice"


async def start_ingest(env: MediaEnv, root: Path, *, batch_size: int = 10) -> IngestRun:
    """A run of ``root`` for ``OWNER`` (its scan job queued)."""
    source = parse_source(str(root), env.stores)
    return await start_run(
        IngestRepository(env.pool),
        env.queue,
        uri=source.uri,
        owner_id=OWNER,
        profile="catalog",
        batch_size=batch_size,
    )


async def wait_scanned(env: MediaEnv, run: IngestRun, timeout: float = 60) -> None:
    ingest = IngestRepository(env.pool)

    async def scanned() -> bool:
        found = await ingest.get_run(run.id)
        return found is not None and found.state == "scanned"

    await wait_for(scanned, timeout=timeout)


async def wait_finished(env: MediaEnv, run: IngestRun, timeout: float = 120) -> RunStatus:
    """The run's status once it is finished (``ingest.runs.is_finished``)."""
    ingest = IngestRepository(env.pool)

    async def finished() -> bool:
        status = await ingest.status(run.id)
        return status is not None and is_finished(status)

    await wait_for(finished, timeout=timeout)
    status = await ingest.status(run.id)
    assert status is not None
    return status


async def ingest_all(env: MediaEnv, root: Path, *, batch_size: int = 10) -> RunStatus:
    """Ingest ``root`` to the end; the run's final status."""
    return await wait_finished(env, await start_ingest(env, root, batch_size=batch_size))


async def checkpoint(env: MediaEnv) -> dict[str, dict[str, Any]]:
    """Every ``ingest_files`` row, by path."""
    async with env.pool.connection() as conn:
        rows = await (await conn.execute("SELECT * FROM ingest_files")).fetchall()
    return {row["path"]: row for row in rows}
