"""The job queue (Postgres, and in memory for tests) and the worker runtime.

This is ``mediajobs.queue``, a subpackage: it never shadows the standard library's
``queue`` module. The interfaces are in ``base.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mediajobs.lazy import lazy_names

if TYPE_CHECKING:
    from mediajobs.queue.base import (
        Leases,
        MaintenanceResult,
        Notifier,
        QueueBackend,
        TransitionHooks,
    )
    from mediajobs.queue.memory import (
        InMemoryLeases,
        InMemoryNotifier,
        InMemoryQueue,
        ManualClock,
    )
    from mediajobs.queue.models import (
        Backoff,
        Cause,
        Enqueued,
        Job,
        JobSpec,
        JobState,
        Transition,
    )
    from mediajobs.queue.queue import JobQueue
    from mediajobs.queue.registry import Handler, HandlerRegistry, JobContext
    from mediajobs.queue.worker import Worker, WorkerOptions, WorkerStats

_EXPORTS = {
    "Leases": "mediajobs.queue.base",
    "MaintenanceResult": "mediajobs.queue.base",
    "Notifier": "mediajobs.queue.base",
    "QueueBackend": "mediajobs.queue.base",
    "TransitionHooks": "mediajobs.queue.base",
    "InMemoryLeases": "mediajobs.queue.memory",
    "InMemoryNotifier": "mediajobs.queue.memory",
    "InMemoryQueue": "mediajobs.queue.memory",
    "ManualClock": "mediajobs.queue.memory",
    "Backoff": "mediajobs.queue.models",
    "Cause": "mediajobs.queue.models",
    "Enqueued": "mediajobs.queue.models",
    "Job": "mediajobs.queue.models",
    "JobSpec": "mediajobs.queue.models",
    "JobState": "mediajobs.queue.models",
    "Transition": "mediajobs.queue.models",
    "JobQueue": "mediajobs.queue.queue",
    "Handler": "mediajobs.queue.registry",
    "HandlerRegistry": "mediajobs.queue.registry",
    "JobContext": "mediajobs.queue.registry",
    "Worker": "mediajobs.queue.worker",
    "WorkerOptions": "mediajobs.queue.worker",
    "WorkerStats": "mediajobs.queue.worker",
}


__getattr__ = lazy_names(__name__, _EXPORTS)

__all__ = [
    "Backoff",
    "Cause",
    "Enqueued",
    "Handler",
    "HandlerRegistry",
    "InMemoryLeases",
    "InMemoryNotifier",
    "InMemoryQueue",
    "Job",
    "JobContext",
    "JobQueue",
    "JobSpec",
    "JobState",
    "Leases",
    "MaintenanceResult",
    "ManualClock",
    "Notifier",
    "QueueBackend",
    "Transition",
    "TransitionHooks",
    "Worker",
    "WorkerOptions",
    "WorkerStats",
]
