"""Plain SQL migrations, applied in order and recorded in ``schema_migrations``.

Files are ``db/migrations/NNNN_name.sql``. Each runs in its own transaction. A session
advisory lock serialises concurrent ``migrate`` calls, so two processes starting at once
apply each migration exactly once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib import resources

from mediajobs.db.pool import connect

log = logging.getLogger(__name__)

# pg_advisory_lock key: the bytes "mjmigrat" read as a big-endian bigint.
MIGRATION_LOCK_KEY = int.from_bytes(b"mjmigrat", "big") - (1 << 63)

CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    text PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


@dataclass(frozen=True)
class Migration:
    version: str  # the file name without .sql, e.g. "0001_jobs"
    sql: str


def available_migrations() -> list[Migration]:
    """The migrations shipped with the package, in the order they apply."""
    folder = resources.files("mediajobs.db") / "migrations"
    found = [
        Migration(entry.name.removesuffix(".sql"), entry.read_text(encoding="utf-8"))
        for entry in folder.iterdir()
        if entry.name.endswith(".sql")
    ]
    return sorted(found, key=lambda migration: migration.version)


async def applied_migrations(conninfo: str) -> list[str]:
    async with await connect(conninfo) as conn:
        await conn.execute(CREATE_TABLE)
        rows = await (await conn.execute("SELECT version FROM schema_migrations")).fetchall()
    return sorted(row["version"] for row in rows)


async def migrate(conninfo: str) -> list[str]:
    """Apply every migration not yet applied; return the versions applied now."""
    applied_now: list[str] = []
    async with await connect(conninfo) as conn:
        await conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        try:
            await conn.execute(CREATE_TABLE)
            rows = await (await conn.execute("SELECT version FROM schema_migrations")).fetchall()
            done = {row["version"] for row in rows}
            for migration in available_migrations():
                if migration.version in done:
                    continue
                async with conn.transaction():
                    await conn.execute(migration.sql.encode())
                    await conn.execute(
                        "INSERT INTO schema_migrations (version) VALUES (%s)",
                        (migration.version,),
                    )
                log.info("applied migration %s", migration.version)
                applied_now.append(migration.version)
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
    return applied_now
