"""Connections and pools.

Each process makes its pools in its composition root and closes them there. The queue uses
pools apart from the app's, and the wake-up listener and the lease heartbeat each hold a
dedicated connection, so a busy API cannot starve job claims and a slow claim cannot delay
a heartbeat.
"""

from __future__ import annotations

from typing import Any, TypeAlias

import psycopg
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool

from mediajobs.errors import DatabaseError

# TCP keepalives notice a silently dead server (a cut network) within about a minute.
KEEPALIVE_KWARGS: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}

CONNECT_TIMEOUT = 5  # seconds one connection attempt may take (libpq connect_timeout)

# Seconds a pool keeps retrying to replace a lost connection before it gives the slot up
# (psycopg_pool's reconnect_timeout, default 300). Its retries back off 1, 2, 4 s... with no
# cap, and a slot being retried counts as open: after a minute-long outage a pool would stay
# below its size for up to a minute more, and requests beyond the live connections would
# wait out POOL_WAIT for nothing. Given up, a slot is opened again on demand at once. With 8 s
# the retries run at 0, 1, 3, 7 and 8 s, never more than 4 s apart.
RECONNECT_TIMEOUT = 8.0

Pool: TypeAlias = AsyncConnectionPool[psycopg.AsyncConnection[DictRow]]


class _SweepingCheck:
    """The pool's ``check`` callback: ``check_connection``, and on a broken connection a
    sweep of the pool's other idle connections (one sweep at a time)."""

    def __init__(self) -> None:
        self.pool: Pool | None = None
        self._sweeping = False

    async def __call__(self, conn: psycopg.AsyncConnection[DictRow]) -> None:
        try:
            await AsyncConnectionPool.check_connection(conn)
        except Exception:
            if self.pool is not None and not self._sweeping:
                self._sweeping = True
                try:
                    await self.pool.check()
                finally:
                    self._sweeping = False
            raise


def connection_kwargs(conninfo: str, **extra: Any) -> dict[str, Any]:
    """Connect arguments: keepalives only over TCP (a Unix socket path takes none)."""
    kwargs: dict[str, Any] = {"autocommit": True, "connect_timeout": CONNECT_TIMEOUT, **extra}
    params = psycopg.conninfo.conninfo_to_dict(conninfo)
    host = str(params.get("host") or "")
    if host and not host.startswith("/"):
        kwargs.update(KEEPALIVE_KWARGS)
    return kwargs


async def open_pool(
    conninfo: str,
    *,
    name: str,
    min_size: int = 1,
    max_size: int = 10,
    connect_timeout: float = 10.0,
    wait_timeout: float | None = None,
) -> Pool:
    """Open an autocommit pool of dict-row connections; fail fast if Postgres is unreachable.
    ``wait_timeout``: seconds a caller waits for a connection (default ``connect_timeout``)."""
    check = _SweepingCheck()
    pool: Pool = AsyncConnectionPool(
        conninfo,
        name=name,
        min_size=min_size,
        max_size=max_size,
        kwargs=connection_kwargs(
            conninfo, row_factory=dict_row, application_name=f"mediajobs-{name}"
        ),
        open=False,
        timeout=connect_timeout if wait_timeout is None else wait_timeout,
        check=check,
        reconnect_timeout=RECONNECT_TIMEOUT,
    )
    check.pool = pool
    try:
        await pool.open(wait=True, timeout=connect_timeout)
    except Exception as exc:
        await pool.close()
        raise DatabaseError(f"cannot connect to Postgres for the {name} pool: {exc}") from exc
    return pool


async def connect(
    conninfo: str, *, application_name: str = "mediajobs", connect_timeout: int | None = None
) -> psycopg.AsyncConnection[DictRow]:
    """One dedicated autocommit connection (migrations, tools). ``connect_timeout``: seconds
    for the whole attempt (libpq's parameter; 2 is its minimum), None: the conninfo's."""
    extra: dict[str, Any] = {} if connect_timeout is None else {"connect_timeout": connect_timeout}
    try:
        return await psycopg.AsyncConnection.connect(
            conninfo,
            **connection_kwargs(
                conninfo, row_factory=dict_row, application_name=application_name, **extra
            ),
        )
    except psycopg.OperationalError as exc:
        raise DatabaseError(f"cannot connect to Postgres: {exc}") from exc
