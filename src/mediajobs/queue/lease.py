"""Lease heartbeats from a thread of their own.

The heartbeat must keep going while a handler hogs the event loop (a CPU-bound step run in
the wrong place, a blocking SDK call), so it runs in a separate OS thread with its own
synchronous connection, renewing every held lease in one statement.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections.abc import Callable

import psycopg

from mediajobs.db.pool import connection_kwargs
from mediajobs.queue import sql
from mediajobs.queue.base import renewal_outcomes
from mediajobs.queue.models import Job

log = logging.getLogger(__name__)


class LeaseKeeper:
    """The Postgres ``Leases``: renews the leases of held jobs every third of the lease, in
    one statement on its own connection. Reports, on the event loop, jobs whose cancel flag is
    set (``on_cancel``) and jobs this worker no longer holds (``on_lost``)."""

    def __init__(self, conninfo: str) -> None:
        self._conninfo = conninfo
        self._lease = 30.0
        self._interval = 10.0
        self._on_cancel: Callable[[uuid.UUID], None] = _ignore
        self._on_lost: Callable[[uuid.UUID], None] = _ignore
        self._held: dict[uuid.UUID, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None
        self.renewals = 0  # statements that renewed at least one lease

    @property
    def interval(self) -> float:
        return self._interval

    def hold(self, job: Job) -> None:
        with self._lock:
            self._held[job.id] = job.attempt

    def release(self, job: Job) -> None:
        with self._lock:
            if self._held.get(job.id) == job.attempt:
                del self._held[job.id]

    def start(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        lease: float,
        on_cancel: Callable[[uuid.UUID], None],
        on_lost: Callable[[uuid.UUID], None],
    ) -> None:
        self._loop = loop
        self._lease = lease
        self._interval = lease / 3.0
        self._on_cancel = on_cancel
        self._on_lost = on_lost
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="mediajobs-lease", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        """Stop the thread (it closes its connection) and wait for it."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            await asyncio.to_thread(thread.join, self._interval + 5.0)

    def _run(self) -> None:
        try:
            while not self._stop.wait(self._interval):
                self.renew()
        finally:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def renew(self) -> None:
        """Renew every held lease now (called by the thread; public for tests)."""
        with self._lock:
            held = dict(self._held)
        if not held:
            return
        try:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg.Connection.connect(
                    self._conninfo,
                    **connection_kwargs(self._conninfo, application_name="mediajobs-lease"),
                )
            rows = self._conn.execute(
                sql.HEARTBEAT,
                {"lease": self._lease, "ids": list(held), "attempts": list(held.values())},
            ).fetchall()
        except psycopg.Error as exc:
            log.warning("lease heartbeat failed (%s); retrying next beat", exc)
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            return
        self.renewals += 1
        still_ours = {row[0]: bool(row[1]) for row in rows}
        with self._lock:
            current = dict(self._held)
        for job_id, lost in renewal_outcomes(held, current, still_ours):
            self._report(self._on_lost if lost else self._on_cancel, job_id)

    def _report(self, callback: Callable[[uuid.UUID], None], job_id: uuid.UUID) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(callback, job_id)


def _ignore(job_id: uuid.UUID) -> None:
    """The callbacks before ``start`` gives the real ones."""
