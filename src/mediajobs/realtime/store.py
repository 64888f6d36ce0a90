"""Event rows in Postgres: written with the job transition, read for replay, pruned."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import DictRow

from mediajobs.db.pool import Pool
from mediajobs.realtime import sql
from mediajobs.realtime.events import Event, PendingEvent

Conn = psycopg.AsyncConnection[DictRow]
PAGE = 500  # rows per replay or catch-up query
PRUNE_BATCH = 5000


@dataclass(frozen=True)
class Position:
    latest: int  # the newest event id (0 when none)
    pruned_through: int  # ids at or below this may be gone


def event_from_row(row: Mapping[str, Any]) -> Event:
    return Event(row["id"], row["owner_id"], row["job_id"], row["type"], row["data"])


class EventStore:
    """The ``job_events`` table. Writes happen on the caller's connection, inside the
    transaction that changes the jobs; reads take a connection from ``pool``."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    @staticmethod
    async def record(conn: Conn, pending: Sequence[PendingEvent]) -> list[Event]:
        """Insert events with commit-ordered ids; call inside the job transaction, as its
        last statement (the id lock is held until commit)."""
        if not pending:
            return []
        params = {
            "owner_ids": [event.owner_id for event in pending],
            "job_ids": [event.job_id for event in pending],
            "types": [event.type for event in pending],
            "data": [event.data for event in pending],
        }
        rows = await (await conn.execute(sql.RECORD, params)).fetchall()
        return [
            Event(row["id"], event.owner_id, event.job_id, event.type, event.data)
            for row, event in zip(rows, pending, strict=True)
        ]

    async def after(
        self, after: int, *, through: int | None = None, limit: int = PAGE
    ) -> list[Event]:
        """Every event with ``after < id <= through`` (all newer when ``through`` is None),
        oldest first, at most ``limit``."""
        params = {"after": after, "through": through, "limit": limit}
        return await self._read(sql.AFTER, params)

    async def for_owner(self, owner_id: str, after: int, *, limit: int = PAGE) -> list[Event]:
        params = {"owner_id": owner_id, "after": after, "limit": limit}
        return await self._read(sql.OWNER_AFTER, params)

    async def for_job(
        self, owner_id: str, job_id: uuid.UUID, after: int, *, limit: int = PAGE
    ) -> list[Event]:
        params = {"owner_id": owner_id, "job_id": job_id, "after": after, "limit": limit}
        return await self._read(sql.JOB_AFTER, params)

    async def position(self) -> Position:
        async with self.pool.connection() as conn:
            row = await (await conn.execute(sql.POSITION)).fetchone()
        assert row is not None  # migration 0003 inserts the retention row
        return Position(int(row["latest"]), int(row["pruned_through"]))

    async def prune(self, age: float) -> int | None:
        """Delete events older than ``age`` seconds; returns how many, or None when another
        process is pruning. The retention mark moves first, so a client resuming from a
        pruned id is told to resync rather than handed a partial replay."""
        async with self.pool.connection() as conn:
            async with conn.transaction():
                locked = await (
                    await conn.execute(sql.TRY_PRUNE_LOCK, {"key": sql.PRUNE_LOCK_KEY})
                ).fetchone()
                if not locked or not locked["locked"]:
                    return None
                row = await (await conn.execute(sql.PRUNE_HORIZON, {"age": age})).fetchone()
                horizon = row["horizon"] if row else None
                if horizon is None:
                    return 0
                await conn.execute(sql.MARK_PRUNED, {"horizon": horizon})
            deleted = 0
            while True:
                cursor = await conn.execute(
                    sql.PRUNE_BATCH, {"horizon": horizon, "limit": PRUNE_BATCH}
                )
                deleted += max(cursor.rowcount, 0)
                if cursor.rowcount < PRUNE_BATCH:
                    return deleted

    async def _read(self, statement: str, params: Mapping[str, Any]) -> list[Event]:
        async with self.pool.connection() as conn:
            rows = await (await conn.execute(statement, params)).fetchall()
        return [event_from_row(row) for row in rows]
