"""The Postgres job queue and the worker runtime.

This is ``mediajobs.queue``, a subpackage: it never shadows the standard library's
``queue`` module.
"""

from __future__ import annotations

from mediajobs.queue.models import Backoff, Cause, Enqueued, Job, JobSpec, JobState, Transition
from mediajobs.queue.queue import JobQueue, MaintenanceResult, TransitionHooks
from mediajobs.queue.registry import Handler, HandlerRegistry, JobContext
from mediajobs.queue.worker import Worker, WorkerOptions, WorkerStats

__all__ = [
    "Backoff",
    "Cause",
    "Enqueued",
    "Handler",
    "HandlerRegistry",
    "Job",
    "JobContext",
    "JobQueue",
    "JobSpec",
    "JobState",
    "MaintenanceResult",
    "Transition",
    "TransitionHooks",
    "Worker",
    "WorkerOptions",
    "WorkerStats",
]
