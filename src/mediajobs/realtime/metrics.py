"""Realtime metrics (Prometheus): one registry per process, served by ``GET /metrics``."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

# No *_created series: they double the output and say little.
disable_created_metrics()  # type: ignore[no-untyped-call]

LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class RealtimeMetrics:
    """Connected clients, deliveries, slow-client drops, replays, publish-to-delivery lag,
    and the hub's Redis health."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.clients = Gauge("mediajobs_sse_clients", "Open SSE streams", registry=r)
        self.delivered = Counter(
            "mediajobs_sse_events_delivered", "Events written to SSE streams", registry=r
        )
        self.dropped = Counter(
            "mediajobs_sse_clients_dropped",
            "SSE streams closed by the server",
            ["reason"],  # slow (buffer full), stalled (send timed out), expired (auth)
            registry=r,
        )
        self.replays = Counter(
            "mediajobs_sse_replays", "Streams that resumed from a Last-Event-ID", registry=r
        )
        self.replayed = Counter(
            "mediajobs_sse_events_replayed", "Events sent from history on resume", registry=r
        )
        self.resyncs = Counter(
            "mediajobs_sse_resyncs", "Resumes refused because history was pruned", registry=r
        )
        self.lag = Histogram(
            "mediajobs_sse_delivery_lag_seconds",
            "From Redis publish to the write on the client's socket",
            buckets=LAG_BUCKETS,
            registry=r,
        )
        self.published = Counter(
            "mediajobs_events_published", "Events published to Redis by this process", registry=r
        )
        self.publish_failures = Counter(
            "mediajobs_events_publish_failures",
            "Events not published (Redis down); hubs read them from Postgres instead",
            registry=r,
        )
        self.redis_connected = Gauge(
            "mediajobs_hub_redis_connected", "1 while the hub's subscription is up", registry=r
        )
        self.redis_reconnects = Counter(
            "mediajobs_hub_redis_reconnects", "Subscriptions re-established", registry=r
        )
        self.gap_fills = Counter(
            "mediajobs_hub_gap_fills", "Events the hub read from Postgres, not Redis", registry=r
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
