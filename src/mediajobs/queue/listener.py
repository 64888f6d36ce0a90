"""Wake-ups over LISTEN/NOTIFY, on one dedicated connection.

A notification is only a hint (claimable jobs may exist, or a running job was asked to
stop); the worker also polls, so a dead listener slows pickup to the poll interval but never
stalls the queue. The connection is health-checked between waits and re-established with
backoff after any failure, including ``pg_terminate_backend``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

import psycopg
from psycopg import sql as pgsql

from mediajobs.db.pool import connection_kwargs

log = logging.getLogger(__name__)

LISTENER_APPLICATION_NAME = "mediajobs-listener"


class NotificationListener:
    """Calls ``on_notify(channel, payload)`` for every notification on ``channels``, and
    ``on_notify(None, "")`` after each (re)connect, since notifications sent while it was
    disconnected are lost."""

    def __init__(
        self,
        conninfo: str,
        channels: Sequence[str],
        on_notify: Callable[[str | None, str], None],
        *,
        health_interval: float = 5.0,
        max_backoff: float = 5.0,
    ) -> None:
        self._conninfo = conninfo
        self._channels = list(channels)
        self._on_notify = on_notify
        self._health_interval = health_interval
        self._max_backoff = max_backoff
        self.connected = asyncio.Event()
        self.reconnects = 0  # how many times the connection was re-established

    async def run(self) -> None:
        """Listen until cancelled."""
        backoff = 0.05
        first = True
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self._conninfo,
                    **connection_kwargs(self._conninfo, application_name=LISTENER_APPLICATION_NAME),
                )
            except psycopg.OperationalError as exc:
                log.warning("listener cannot connect (%s); retrying in %.2fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(self._max_backoff, backoff * 2)
                continue
            try:
                for channel in self._channels:
                    await conn.execute(pgsql.SQL("LISTEN {}").format(pgsql.Identifier(channel)))
                if not first:
                    self.reconnects += 1
                    log.info("listener reconnected")
                first = False
                backoff = 0.05
                self.connected.set()
                self._on_notify(None, "")
                await self._listen(conn)
            except (psycopg.OperationalError, psycopg.InterfaceError, TimeoutError) as exc:
                log.warning("listener connection lost (%s); reconnecting", exc)
            finally:
                self.connected.clear()
                await _close_quietly(conn)
            await asyncio.sleep(backoff)
            backoff = min(self._max_backoff, backoff * 2)

    async def _listen(self, conn: psycopg.AsyncConnection[object]) -> None:
        while True:
            async for notify in conn.notifies(timeout=self._health_interval):
                self._on_notify(notify.channel, notify.payload)
            # No notification for a while: prove the connection is alive.
            await asyncio.wait_for(conn.execute("SELECT 1"), timeout=self._health_interval)


async def _close_quietly(conn: psycopg.AsyncConnection[object]) -> None:
    try:
        await conn.close()
    except Exception:  # the connection is already broken; nothing to do
        log.debug("closing a broken listener connection failed", exc_info=True)
