"""One Server-Sent Events response: replay from history, then live events from the hub.

The resume protocol (no gap, no duplicate): register with the hub first, so every event
from then on is buffered; read history after the client's Last-Event-ID and send it; then
send buffered events newer than the last one sent. A Last-Event-ID older than retention (or
newer than any event) gets a ``resync`` event instead: the client refetches state over REST.

Heartbeat comments keep proxies from closing an idle stream; every write has a timeout so
a reader that stopped reading cannot hold the process; the stream ends when the ticket or
token that opened it expires (``stream_expired``), when the hub closes it, or when the
client goes away. Cleanup runs in ``finally``: a disconnect may also arrive as cancellation.
When Postgres fails while the stream reads history, the stream ends with a ``stream_error``
event (``{"code": "database_unavailable"}``); EventSource reconnects after ``retry``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import psycopg
from psycopg_pool import PoolTimeout
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from mediajobs.config import Settings
from mediajobs.realtime.events import (
    RESYNC,
    STREAM_ERROR,
    STREAM_EXPIRED,
    Event,
    dumps,
    sse_frame,
)
from mediajobs.realtime.hub import EventHub, Subscription
from mediajobs.realtime.store import PAGE, EventStore

log = logging.getLogger(__name__)

HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache, no-transform"),
    (b"x-accel-buffering", b"no"),  # nginx: do not buffer this response
]


@dataclass(frozen=True)
class StreamOptions:
    """How each stream runs; the defaults are ``Settings``' (their one home)."""

    heartbeat: float = Settings.sse_heartbeat  # seconds of silence before a ": ping" comment
    retry_ms: int = int(Settings.sse_retry * 1000)  # the reconnect delay told to EventSource
    send_timeout: float = Settings.sse_send_timeout  # a slower write drops the client as stalled

    @classmethod
    def from_settings(cls, settings: Settings) -> StreamOptions:
        """The options ``settings`` name."""
        return cls(
            heartbeat=settings.sse_heartbeat,
            retry_ms=int(settings.sse_retry * 1000),
            send_timeout=settings.sse_send_timeout,
        )


# Postgres away or restarting: the history the stream needs cannot be read now.
_DATABASE_DOWN = (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout)


class _Stalled(Exception):
    """A write did not complete within the send timeout."""


class EventStreamResponse(Response):
    """The SSE response for one client. ``job_id`` limits it to one job's events and ends
    it after that job's terminal event; ``job_finished`` says the job had already ended
    when the request came (its terminal event must then be in history)."""

    def __init__(
        self,
        hub: EventHub,
        store: EventStore,
        options: StreamOptions,
        *,
        owner_id: str,
        last_event_id: int | None,
        expires_at: float | None,
        job_id: uuid.UUID | None = None,
        job_finished: bool = False,
    ) -> None:
        self._hub = hub
        self._store = store
        self._options = options
        self._owner_id = owner_id
        self._job_id = job_id
        self._job_finished = job_finished
        self._last_event_id = last_event_id
        self._expires_at = expires_at
        self._metrics = hub.metrics
        self._send: Send | None = None
        self._last_sent = 0  # id of the last event written
        self._done = False  # the job stream wrote its terminal event

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._send = send
        sub = self._hub.register(self._owner_id, self._job_id)
        self._metrics.clients.inc()
        watcher = asyncio.create_task(_watch_disconnect(receive, sub))
        stalled = False
        try:
            await self._write_start()
            await self._write(f"retry: {self._options.retry_ms}\n\n".encode())
            await self._replay(sub)
            if not self._done:
                await self._live(sub)
        except _Stalled:
            # A client whose buffer also overflowed meanwhile counts as slow.
            stalled = True
            self._metrics.dropped.labels("slow" if sub.closed == "slow" else "stalled").inc()
        except _DATABASE_DOWN as exc:
            log.warning(
                "event stream ended: database unavailable (%s: %s)", type(exc).__name__, exc
            )
            self._metrics.dropped.labels("unavailable").inc()
            data = {"code": "database_unavailable", "message": "the database is unavailable"}
            try:
                await self._write(sse_frame(STREAM_ERROR, dumps(data)))
            except _Stalled:
                stalled = True
        finally:
            self._hub.unregister(sub)
            watcher.cancel()
            self._metrics.clients.dec()
            if not stalled and sub.closed != "disconnected":
                # End the chunked body cleanly (a bounded wait: the client may be gone).
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(self._options.send_timeout):
                        await send({"type": "http.response.body", "body": b"", "more_body": False})

    # -- phases ------------------------------------------------------------------------

    async def _replay(self, sub: Subscription) -> None:
        after = self._last_event_id
        if after is None and self._job_id is None:
            self._last_sent = sub.start  # /events without Last-Event-ID: live from now on
            return
        if after is not None:
            position = await self._store.position()
            if after < position.pruned_through or after > position.latest:
                await self._resync(
                    sub, "history_expired" if after <= position.latest else "unknown_id"
                )
                return
            self._metrics.replays.inc()
        self._last_sent = after or 0
        while True:
            if self._job_id is not None:
                events = await self._store.for_job(self._owner_id, self._job_id, self._last_sent)
            else:
                events = await self._store.for_owner(self._owner_id, self._last_sent)
            await self._write_events(events)
            self._metrics.replayed.inc(len(events))
            if self._done or len(events) < PAGE:
                break
        if self._job_id is not None and self._job_finished and not self._done:
            # The job ended but its events were pruned: only REST knows its outcome now.
            await self._resync(sub, "history_expired")
            self._done = True

    async def _resync(self, sub: Subscription, reason: str) -> None:
        """Tell the client to refetch state; its resume point moves to where this stream
        starts its live part, so nothing after the refetch is lost."""
        self._metrics.resyncs.inc()
        self._last_sent = sub.start
        data = dumps({"reason": reason, "lastEventId": sub.start})
        await self._write(sse_frame(RESYNC, data, event_id=sub.start))

    async def _live(self, sub: Subscription) -> None:
        options = self._options
        loop = asyncio.get_running_loop()
        expires_in = None if self._expires_at is None else self._expires_at - time.time()
        expires_at = None if expires_in is None else loop.time() + expires_in
        while True:
            now = loop.time()
            wait = (
                options.heartbeat
                if expires_at is None
                else min(options.heartbeat, expires_at - now)
            )
            if wait > 0 and not sub.ready.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(sub.ready.wait(), wait)
            sub.ready.clear()
            events = sub.take()
            if events:
                await self._write_events(events)
                if self._done:
                    return
            if sub.closed is not None:
                if sub.closed in ("slow", "shutdown"):
                    self._metrics.dropped.labels(sub.closed).inc()
                return
            if expires_at is not None and loop.time() >= expires_at:
                self._metrics.dropped.labels("expired").inc()
                await self._write(
                    sse_frame(STREAM_EXPIRED, dumps({"reason": "credentials_expired"}))
                )
                return
            if not events:
                await self._write(b": ping\n\n")

    # -- writing -----------------------------------------------------------------------

    async def _write_events(self, events: Sequence[Event]) -> None:
        frames: list[bytes] = []
        lags: list[float] = []
        for event in events:
            if event.id <= self._last_sent:
                continue  # already sent from history
            frames.append(event.frame)
            self._last_sent = event.id
            if event.published_at is not None:
                lags.append(event.published_at)
            if self._job_id is not None and event.terminal:
                self._done = True
                break
        if not frames:
            return
        await self._write(b"".join(frames))
        self._metrics.delivered.inc(len(frames))
        now = time.time()
        for published_at in lags:
            self._metrics.lag.observe(max(0.0, now - published_at))

    async def _write_start(self) -> None:
        assert self._send is not None
        await self._send({"type": "http.response.start", "status": 200, "headers": HEADERS})

    async def _write(self, body: bytes) -> None:
        assert self._send is not None
        message: Message = {"type": "http.response.body", "body": body, "more_body": True}
        try:
            async with asyncio.timeout(self._options.send_timeout):
                await self._send(message)
        except TimeoutError:
            raise _Stalled from None


async def _watch_disconnect(receive: Receive, sub: Subscription) -> None:
    """Close the subscription when the client goes away (the stream itself only writes)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            sub.close("disconnected")
            return
