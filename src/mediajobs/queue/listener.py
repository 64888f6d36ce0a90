"""Wake-ups over LISTEN/NOTIFY, on one dedicated connection: the Postgres ``Notifier``.

A notification is only a hint (claimable jobs may exist, or a running job was asked to
stop); the worker also polls, so a dead listener slows pickup to the poll interval but never
stalls the queue. The connection is health-checked between waits and re-established with
backoff after any failure, including ``pg_terminate_backend``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable

import psycopg
from psycopg import sql as pgsql

from mediajobs.db.pool import connection_kwargs
from mediajobs.queue import sql

log = logging.getLogger(__name__)

LISTENER_APPLICATION_NAME = "mediajobs-listener"


class NotificationListener:
    """Listens on the queue's channels (``sql.WAKEUP_CHANNEL``, ``sql.CANCEL_CHANNEL``) and
    calls ``on_wakeup()`` for each hint, and after each (re)connect, since notifications
    sent while it was disconnected are lost; ``on_cancel(job_id)`` for each cancel."""

    def __init__(
        self,
        conninfo: str,
        *,
        health_interval: float = 5.0,
        max_backoff: float = 5.0,
    ) -> None:
        self._conninfo = conninfo
        self._health_interval = health_interval
        self._max_backoff = max_backoff
        self._connected = asyncio.Event()
        self.reconnects = 0  # how many times the connection was re-established

    @property
    def connected(self) -> asyncio.Event:
        return self._connected

    async def run(
        self, on_wakeup: Callable[[], None], on_cancel: Callable[[uuid.UUID], None]
    ) -> None:
        """Listen until cancelled."""

        def on_notify(channel: str, payload: str) -> None:
            if channel == sql.CANCEL_CHANNEL:
                with contextlib.suppress(ValueError):
                    on_cancel(uuid.UUID(payload))
            else:
                on_wakeup()

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
                for channel in (sql.WAKEUP_CHANNEL, sql.CANCEL_CHANNEL):
                    await conn.execute(pgsql.SQL("LISTEN {}").format(pgsql.Identifier(channel)))
                if not first:
                    self.reconnects += 1
                    log.info("listener reconnected")
                first = False
                backoff = 0.05
                self._connected.set()
                on_wakeup()
                await self._listen(conn, on_notify)
            except (psycopg.OperationalError, psycopg.InterfaceError, TimeoutError) as exc:
                log.warning("listener connection lost (%s); reconnecting", exc)
            finally:
                self._connected.clear()
                await _close_quietly(conn)
            await asyncio.sleep(backoff)
            backoff = min(self._max_backoff, backoff * 2)

    async def _listen(
        self, conn: psycopg.AsyncConnection[object], on_notify: Callable[[str, str], None]
    ) -> None:
        while True:
            async for notify in conn.notifies(timeout=self._health_interval):
                on_notify(notify.channel, notify.payload)
            # No notification for a while: prove the connection is alive.
            await asyncio.wait_for(conn.execute("SELECT 1"), timeout=self._health_interval)


async def _close_quietly(conn: psycopg.AsyncConnection[object]) -> None:
    try:
        await conn.close()
    except Exception:  # the connection is already broken; nothing to do
        log.debug("closing a broken listener connection failed", exc_info=True)
