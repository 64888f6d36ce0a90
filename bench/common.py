"""What the bench scripts share: throwaway databases, percentiles, recording results."""

from __future__ import annotations

import os
import platform
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from psycopg import conninfo, sql

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DSN = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def fresh_database(admin_dsn: str, label: str) -> tuple[str, str]:
    """Create an empty database; returns its name and its connection string."""
    name = f"bench_{label}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return name, conninfo.make_conninfo(admin_dsn, dbname=name)


def drop_database(admin_dsn: str, name: str) -> None:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def record(title: str, table: str, command: str) -> None:
    """Append a result, with the command and the machine, to docs/benchmarks.md."""
    doc = REPO / "docs" / "benchmarks.md"
    machine = f"{platform.node()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    with doc.open("a", encoding="utf-8") as out:
        out.write(f"\n### {title}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n\n")
        out.write(f"Command: `{command}`  \nMachine: {machine}\n\n{table}\n")
