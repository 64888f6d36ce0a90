"""Service metrics for ``/metrics``: HTTP requests and latency by route template, and the
queue as seen at scrape time (jobs by state, depth, age of the oldest queued job)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from mediajobs.queue.models import JobState
from mediajobs.queue.queue import JobQueue

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class HttpMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "mediajobs_http_requests",
            "HTTP requests by method, route template and status",
            ["method", "route", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "mediajobs_http_request_duration_seconds",
            "HTTP request latency by method and route template (event streams excluded)",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )


class QueueGauges:
    """Read from Postgres on each scrape (two small queries)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.jobs = Gauge(
            "mediajobs_jobs", "Jobs in the hot table by state", ["state"], registry=registry
        )
        self.depth = Gauge("mediajobs_queue_depth", "Jobs waiting to run", registry=registry)
        self.oldest = Gauge(
            "mediajobs_queue_oldest_age_seconds",
            "How long the oldest runnable job has waited",
            registry=registry,
        )

    async def refresh(self, queue: JobQueue) -> None:
        counts = await queue.counts()
        for state, count in counts.items():
            self.jobs.labels(state.value).set(count)
        self.depth.set(counts[JobState.QUEUED])
        self.oldest.set(await queue.oldest_queued_age())
