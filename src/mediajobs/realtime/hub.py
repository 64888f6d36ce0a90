"""The SSE hub of one API process: one Redis subscription, fanned out to every open stream.

Events reach the hub from Redis (fast) and from Postgres (complete). The hub delivers them
to streams strictly in id order and without gaps, keeping a watermark: every event with an
id at or below it has been delivered. Because ids commit in order (migration 0003), a live
event N above ``watermark + 1`` proves that every id in between either committed already or
never will; after a short wait for a late publish, the hub reads that range from Postgres.
It also reads everything after the watermark every few seconds (often while Redis is
down, and at once after the subscription comes back), so an event whose publish was lost
still arrives.

A stream registers a ``Subscription``: a bounded buffer the hub appends to without ever
waiting. A stream whose buffer is full is closed as slow; its client reconnects and
replays from its Last-Event-ID.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

from mediajobs.config import Settings
from mediajobs.realtime.events import Event
from mediajobs.realtime.metrics import RealtimeMetrics
from mediajobs.realtime.publisher import decode_message
from mediajobs.realtime.store import PAGE, EventStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HubOptions:
    """How the hub runs. The fields a deployment sets default to ``Settings`` (their one
    home); ``from_settings`` is how the service builds them."""

    buffer: int = Settings.sse_buffer  # events held per stream before it is closed as slow
    poll_interval: float = Settings.hub_poll_interval  # read Postgres after the watermark ...
    outage_poll_interval: float = 0.5  # ... and this often while Redis is unreachable
    gap_wait: float = 0.05  # how long a hole may wait for a late publish before a read
    reconnect_max: float = 2.0  # longest pause between Redis reconnect attempts

    @classmethod
    def from_settings(cls, settings: Settings) -> HubOptions:
        """The options ``settings`` name."""
        return cls(buffer=settings.sse_buffer, poll_interval=settings.hub_poll_interval)


class Subscription:
    """One stream's view of the hub: events of ``owner_id`` (and of ``job_id`` when set),
    from the moment it registered (``start``: the watermark then)."""

    __slots__ = ("_buffer", "_limit", "closed", "job_id", "owner_id", "ready", "start")

    def __init__(self, owner_id: str, job_id: uuid.UUID | None, start: int, limit: int) -> None:
        self.owner_id = owner_id
        self.job_id = job_id
        self.start = start
        self.ready = asyncio.Event()
        self.closed: str | None = None  # why the hub or the client ended it
        self._buffer: deque[Event] = deque()
        self._limit = limit

    def push(self, event: Event) -> None:
        if self.closed is not None or (self.job_id is not None and event.job_id != self.job_id):
            return
        if len(self._buffer) >= self._limit:
            self.close("slow")
            return
        self._buffer.append(event)
        self.ready.set()

    def close(self, reason: str) -> None:
        if self.closed is None:
            self.closed = reason
            self._buffer.clear()
        self.ready.set()

    def take(self) -> list[Event]:
        batch = list(self._buffer)
        self._buffer.clear()
        return batch


class EventHub:
    """See the module docstring. ``start()`` before registering, ``stop()`` at shutdown."""

    def __init__(
        self,
        store: EventStore,
        redis: Redis | None,
        channel: str,
        *,
        metrics: RealtimeMetrics | None = None,
        options: HubOptions | None = None,
    ) -> None:
        self._store = store
        self._redis = redis
        self._channel = channel
        self.metrics = metrics or RealtimeMetrics()
        self.options = options or HubOptions()
        self._by_owner: dict[str, set[Subscription]] = {}
        self._watermark = 0
        self._pending: dict[int, Event] = {}  # live events above watermark + 1
        self._wake = asyncio.Event()
        self._read_due = False  # read Postgres after the watermark on the next turn
        self._subscribed = asyncio.Event()  # set while the Redis subscription is up
        self._tasks: list[asyncio.Task[None]] = []

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self, *, subscribe_timeout: float = 2.0) -> None:
        """Subscribe (waiting up to ``subscribe_timeout`` for Redis; it may come later),
        set the watermark to the newest event, and start delivering."""
        if self._redis is not None:
            self._tasks.append(asyncio.create_task(self._listen(), name="mediajobs-hub-redis"))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._subscribed.wait(), subscribe_timeout)
        self._watermark = (await self._store.position()).latest
        self._pending = {k: v for k, v in self._pending.items() if k > self._watermark}
        self._tasks.append(asyncio.create_task(self._sequence(), name="mediajobs-hub-sequence"))
        self._tasks.append(asyncio.create_task(self._poll(), name="mediajobs-hub-poll"))

    async def stop(self) -> None:
        """End every stream (clients reconnect elsewhere) and stop the tasks."""
        self.close_all("shutdown")
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    def close_all(self, reason: str) -> None:
        for subs in list(self._by_owner.values()):
            for sub in list(subs):
                sub.close(reason)

    @property
    def watermark(self) -> int:
        return self._watermark

    @property
    def redis_connected(self) -> bool:
        return self._subscribed.is_set()

    @property
    def streams(self) -> int:
        return sum(len(subs) for subs in self._by_owner.values())

    # -- streams -----------------------------------------------------------------------

    def register(self, owner_id: str, job_id: uuid.UUID | None = None) -> Subscription:
        """Start buffering ``owner_id``'s events (one job's, with ``job_id``): every event
        above the returned subscription's ``start`` will be pushed to it, in order."""
        sub = Subscription(owner_id, job_id, self._watermark, self.options.buffer)
        self._by_owner.setdefault(owner_id, set()).add(sub)
        return sub

    def unregister(self, sub: Subscription) -> None:
        subs = self._by_owner.get(sub.owner_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._by_owner[sub.owner_id]

    # -- ordering ----------------------------------------------------------------------

    def offer(self, events: Iterable[Event]) -> None:
        """Live events from Redis, in any order, duplicates allowed."""
        for event in events:
            if event.id > self._watermark:
                self._pending[event.id] = event
        self._wake.set()

    def _deliver(self, event: Event) -> None:
        # push() never unregisters (streams do, in their own task): no copy of the set.
        for sub in self._by_owner.get(event.owner_id, ()):
            sub.push(event)

    def _drain(self) -> None:
        """Deliver the pending events that continue the watermark without a hole."""
        pending = self._pending
        while pending:
            event = pending.pop(self._watermark + 1, None)
            if event is None:
                return
            self._deliver(event)
            self._watermark = event.id

    async def _sequence(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._advance()
            except Exception:  # a bug here must not stop delivery for the whole process
                log.exception("hub sequencing failed; retrying")
                await asyncio.sleep(0.5)
                self._request_read()

    async def _advance(self) -> None:
        """Deliver what continues the watermark; settle a hole; read when due."""
        loop = asyncio.get_running_loop()
        self._drain()
        if self._pending:
            # A hole: give a late publish (another process's) a moment, then read it.
            deadline = loop.time() + self.options.gap_wait
            while self._pending and (remaining := deadline - loop.time()) > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), remaining)
                self._wake.clear()
                self._drain()
            if self._pending:
                await self._read(through=max(self._pending))
        if self._read_due:
            self._read_due = False
            await self._read(through=None)

    async def _read(self, *, through: int | None) -> None:
        """Deliver committed events after the watermark from Postgres (up to ``through``:
        a live id, which proves everything below it is settled)."""
        while True:
            try:
                rows = await self._store.after(self._watermark, through=through, limit=PAGE)
            except Exception as exc:  # Postgres away: keep what we have, try again soon
                log.warning("hub could not read events (%s: %s)", type(exc).__name__, exc)
                await asyncio.sleep(0.5)
                self._wake.set()
                return
            for row in rows:
                live = self._pending.pop(row.id, None)
                if live is None:
                    self.metrics.gap_fills.inc()
                self._deliver(live or row)
                self._watermark = row.id
            if len(rows) < PAGE:
                break
        if through is not None and through > self._watermark:
            self._watermark = through  # the ids in between were rolled back: never to exist
        for stale in [k for k in self._pending if k <= self._watermark]:
            del self._pending[stale]
        self._drain()

    async def _poll(self) -> None:
        while True:
            interval = (
                self.options.poll_interval
                if self._subscribed.is_set()
                else self.options.outage_poll_interval
            )
            await asyncio.sleep(interval)
            self._request_read()

    def _request_read(self) -> None:
        self._read_due = True
        self._wake.set()

    # -- Redis -------------------------------------------------------------------------

    async def _listen(self) -> None:
        assert self._redis is not None
        pause = 0.05
        first = True
        while True:
            pubsub = self._redis.pubsub()
            try:
                await pubsub.subscribe(self._channel)
                self._set_redis(True)
                if not first:
                    self.metrics.redis_reconnects.inc()
                    log.info("hub resubscribed to Redis; catching up from Postgres")
                self._request_read()  # whatever was published while we were away
                first = False
                pause = 0.05
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message is not None and message.get("type") == "message":
                        self._on_message(message["data"])
            except (RedisError, OSError) as exc:
                if self._subscribed.is_set():
                    log.warning(
                        "hub lost its Redis subscription (%s: %s); reading Postgres until it "
                        "is back",
                        type(exc).__name__,
                        exc,
                    )
                self._set_redis(False)
            finally:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(1.0):
                        await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(pause)
            pause = min(self.options.reconnect_max, pause * 2)

    def _on_message(self, raw: bytes | str) -> None:
        try:
            events = decode_message(raw)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring a malformed event message (%s)", exc)
            return
        self.offer(events)

    def _set_redis(self, up: bool) -> None:
        self.metrics.redis_connected.set(1 if up else 0)
        if up:
            self._subscribed.set()
        else:
            self._subscribed.clear()
