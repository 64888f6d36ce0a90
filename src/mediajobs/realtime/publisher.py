"""Publishing recorded events to Redis, after the transaction that wrote them commits.

Publishing is best effort by design: the event rows are already committed, and every hub
reads what it did not receive from Postgres. So a Redis outage never fails or slows a job:
after a failure the publisher stays quiet for ``pause`` seconds instead of timing out on
every transition.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Sequence
from typing import Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

from mediajobs.db.collections import CollectionRepository
from mediajobs.queue.models import Transition
from mediajobs.realtime.events import Event, PendingEvent, collection_events, pending_events
from mediajobs.realtime.metrics import RealtimeMetrics
from mediajobs.realtime.store import Conn, EventStore

log = logging.getLogger(__name__)


class Publisher(Protocol):
    async def publish(self, events: Sequence[Event]) -> None:
        """Announce committed events; never raises."""


def encode_message(events: Sequence[Event], published_at: float) -> str:
    """One Redis message per transaction: ``{"t": epoch seconds, "e": [event, ...]}``."""
    return json.dumps({"t": published_at, "e": [event.to_message() for event in events]})


def decode_message(raw: bytes | str) -> list[Event]:
    """The events of a message; raises ``ValueError`` (or ``KeyError``/``TypeError``) when
    it is not one of ours."""
    body = json.loads(raw)
    published_at = float(body["t"])
    return [Event.from_message(item, published_at) for item in body["e"]]


class RedisPublisher:
    """Publishes each transaction's events as one message on ``channel``."""

    def __init__(
        self,
        redis: Redis,
        channel: str,
        *,
        metrics: RealtimeMetrics | None = None,
        timeout: float = 1.0,
        pause: float = 1.0,
    ) -> None:
        self._redis = redis
        self._channel = channel
        self._metrics = metrics
        self._timeout = timeout
        self._pause = pause
        self._quiet_until = 0.0
        self._failing = False
        self.published = 0
        self.failed = 0

    async def publish(self, events: Sequence[Event]) -> None:
        if not events:
            return
        now = time.monotonic()
        if now < self._quiet_until:
            self._count_failure(len(events))
            return
        try:
            async with asyncio.timeout(self._timeout):
                await self._redis.publish(self._channel, encode_message(events, time.time()))
        except (RedisError, OSError, TimeoutError) as exc:
            if not self._failing:
                log.warning(
                    "publishing events failed (%s: %s); hubs read them from Postgres until "
                    "Redis answers again",
                    type(exc).__name__,
                    exc,
                )
            self._failing = True
            self._quiet_until = time.monotonic() + self._pause
            self._count_failure(len(events))
            return
        if self._failing:
            log.info("publishing events to Redis again")
            self._failing = False
        self.published += len(events)
        if self._metrics is not None:
            self._metrics.published.inc(len(events))

    def _count_failure(self, n: int) -> None:
        self.failed += n
        if self._metrics is not None:
            self._metrics.publish_failures.inc(n)


class EventRecorder:
    """The queue's ``TransitionHooks``: event rows commit with the job transition, then go
    out through the publisher."""

    def __init__(self, publisher: Publisher | None) -> None:
        self._publisher = publisher

    async def record(self, conn: Conn, transitions: Sequence[Transition]) -> list[Event]:
        return await EventStore.record(conn, pending_events(transitions))

    async def record_events(self, conn: Conn, pending: Sequence[PendingEvent]) -> list[Event]:
        """Events no transition emits (``collection_updated``), inside the caller's
        transaction as its last statement (the id lock is held until commit); pass the
        result to ``committed`` after the commit."""
        return await EventStore.record(conn, pending)

    async def collections_changed(
        self, conn: Conn, media_id: uuid.UUID, reason: str, job_id: uuid.UUID | None
    ) -> list[Event]:
        """Inside the caller's transaction, as its last step: ``collection_updated``
        (``reason``, ``COLLECTION_REASONS``) for each collection that holds ``media_id``,
        recorded; pass the result to ``committed`` after the commit."""
        holders = await CollectionRepository.containing(conn, media_id)
        pending = collection_events(holders, reason, media_id=media_id, job_id=job_id)
        return await self.record_events(conn, pending)

    async def committed(self, recorded: list[Event]) -> None:
        if recorded and self._publisher is not None:
            await self._publisher.publish(recorded)
