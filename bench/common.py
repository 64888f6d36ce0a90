"""What the bench scripts share: throwaway databases, percentiles, recording results."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
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


def report_figures(title: str, figures: dict[str, object], script: str, *, keep: bool) -> None:
    """Print ``figures`` as a table, record it (with the command that ran ``script``) in
    docs/benchmarks.md when ``keep``, and print them as the last line, in JSON."""
    table = "\n".join(
        ["| figure | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in figures.items())]
    )
    print(table)
    if keep:
        command = f"python {script} " + " ".join(sys.argv[1:])
        record(title, table, command.strip())
    print(json.dumps(figures))


def start_serve(
    dsn: str,
    redis_url: str,
    port: int,
    secret: str,
    *,
    command: list[str] | None = None,
    **extra: str,
) -> subprocess.Popen[bytes]:
    """`mediajobs serve` (or ``command``, configured the same way) on ``port`` (quiet), up
    when this returns."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MEDIAJOBS_")},
        "DATABASE_URL": dsn,
        "REDIS_URL": redis_url,
        "MEDIAJOBS_ENV": "test",
        "MEDIAJOBS_JWT_SECRET": secret,
        "MEDIAJOBS_LOG_LEVEL": "WARNING",
        "MEDIAJOBS_PORT": str(port),
        **extra,
    }
    proc = subprocess.Popen(
        command or [sys.executable, "-m", "mediajobs", "serve"],
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the API did not start")
