"""Job events: recorded with each job transition, published through Redis, streamed to
browsers over Server-Sent Events with replay. See docs/events.md."""

from __future__ import annotations

from mediajobs.realtime.events import Event, family, is_terminal, pending_event
from mediajobs.realtime.hub import EventHub, HubOptions, Subscription
from mediajobs.realtime.metrics import RealtimeMetrics
from mediajobs.realtime.publisher import EventRecorder, Publisher, RedisPublisher
from mediajobs.realtime.sse import EventStreamResponse, StreamOptions
from mediajobs.realtime.store import EventStore, Position

__all__ = [
    "Event",
    "EventHub",
    "EventRecorder",
    "EventStore",
    "EventStreamResponse",
    "HubOptions",
    "Position",
    "Publisher",
    "RealtimeMetrics",
    "RedisPublisher",
    "StreamOptions",
    "Subscription",
    "family",
    "is_terminal",
    "pending_event",
]
