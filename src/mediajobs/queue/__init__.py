"""The job queue (Postgres, and in memory for tests) and the worker runtime.

This is ``mediajobs.queue``, a subpackage: it never shadows the standard library's
``queue`` module. The interfaces are in ``base.py``.
"""

from __future__ import annotations

from mediajobs.queue.base import (
    Leases,
    MaintenanceResult,
    Notifier,
    QueueBackend,
    TransitionHooks,
)
from mediajobs.queue.memory import InMemoryLeases, InMemoryNotifier, InMemoryQueue, ManualClock
from mediajobs.queue.models import Backoff, Cause, Enqueued, Job, JobSpec, JobState, Transition
from mediajobs.queue.queue import JobQueue
from mediajobs.queue.registry import Handler, HandlerRegistry, JobContext
from mediajobs.queue.worker import Worker, WorkerOptions, WorkerStats

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
