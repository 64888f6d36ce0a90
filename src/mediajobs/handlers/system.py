"""Operational jobs.

``system.ping`` proves the whole path works: it is enqueued like any job, claimed by a
worker and answered with the worker's name and the time it started, so
``mediajobs jobs ping`` measures the real enqueue-to-handler latency of a deployment.
"""

from __future__ import annotations

from datetime import UTC, datetime

from mediajobs.queue import kinds
from mediajobs.queue.models import Job
from mediajobs.queue.registry import JobContext
from mediajobs.types import JSON

PING_KIND = kinds.PING


async def ping(ctx: JobContext, job: Job) -> JSON:
    return {
        "worker": ctx.worker_name,
        "handledAt": datetime.now(UTC).isoformat(),
        "attempt": job.attempt,
    }
