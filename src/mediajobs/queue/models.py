"""Values of the queue: job states, job records, what a transition reports."""

from __future__ import annotations

import os
import random
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from mediajobs.types import JSON


class JobState(StrEnum):
    QUEUED = "queued"  # waiting for run_at and a free worker
    RUNNING = "running"  # claimed; a worker holds the lease
    SUCCEEDED = "succeeded"  # finished; `result` holds the handler's return value
    FAILED = "failed"  # finished without success; `error` says why
    CANCELLED = "cancelled"  # stopped on request, before or while running

    @property
    def finished(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


@dataclass(frozen=True)
class Job:
    """One job, as a row of ``jobs`` (or ``jobs_archive``) read at some moment."""

    id: uuid.UUID
    kind: str
    owner_id: str
    payload: dict[str, JSON]
    state: JobState
    priority: int
    run_at: datetime
    attempt: int
    max_attempts: int
    lease_owner: str | None
    lease_expires_at: datetime | None
    cancel_requested: bool
    progress: float
    message: str | None
    result: JSON
    error: dict[str, JSON] | None
    idempotency_key: str | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Job:
        return cls(
            id=row["id"],
            kind=row["kind"],
            owner_id=row["owner_id"],
            payload=row["payload"],
            state=JobState(row["state"]),
            priority=row["priority"],
            run_at=row["run_at"],
            attempt=row["attempt"],
            max_attempts=row["max_attempts"],
            lease_owner=row["lease_owner"],
            lease_expires_at=row["lease_expires_at"],
            cancel_requested=row["cancel_requested"],
            progress=row["progress"],
            message=row["message"],
            result=row["result"],
            error=row["error"],
            idempotency_key=row["idempotency_key"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
        )


@dataclass(frozen=True)
class JobSpec:
    """What to enqueue; the queue fills in id, state and timestamps."""

    kind: str
    owner_id: str
    payload: Mapping[str, JSON] = field(default_factory=dict)
    priority: int = 0
    delay: float = 0.0  # seconds from now (or from run_at) before it may run
    run_at: datetime | None = None
    max_attempts: int = 5
    idempotency_key: str | None = None

    def __post_init__(self) -> None:
        if not self.kind:
            raise ValueError("a job needs a kind")
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if self.delay < 0:
            raise ValueError("delay must be >= 0")
        if not -32768 <= self.priority <= 32767:
            raise ValueError("priority must fit in a smallint")


@dataclass(frozen=True)
class Enqueued:
    """The answer to an enqueue: the job's id, and False when an idempotency key matched."""

    id: uuid.UUID
    created: bool


class Cause(StrEnum):
    """Why a transition happened (several causes share a resulting state)."""

    CLAIMED = "claimed"  # a worker took the job: its handler starts now
    PROGRESS = "progress"  # the handler reported progress
    SUCCEEDED = "succeeded"  # the handler returned
    FAILED = "failed"  # failed for good: not retryable, or out of attempts
    RETRYING = "retrying"  # the attempt failed; the job is queued again after a backoff
    REQUEUED = "requeued"  # the lease expired or was handed back; another attempt follows
    CANCELLED = "cancelled"  # stopped on request
    CANCEL_REQUESTED = "cancel_requested"  # asked to stop while running; still running


@dataclass(frozen=True)
class Transition:
    """A change of one job, reported to the queue's ``TransitionHooks`` inside the
    transaction that makes it, so an event row can commit with the state change."""

    job_id: uuid.UUID
    owner_id: str
    kind: str
    state: JobState
    attempt: int
    cause: Cause
    progress: float | None = None
    message: str | None = None
    result: JSON = None
    error: dict[str, JSON] | None = None


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter: ``base * 2**(attempt-1)``, capped, then scaled by a
    random factor in [1 - jitter, 1] so retries of many jobs do not arrive in lockstep."""

    base: float = 2.0
    cap: float = 600.0
    jitter: float = 0.5

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        exponential = min(self.cap, self.base * 2.0 ** max(0, attempt - 1))
        factor = 1.0 - self.jitter * (rng or random).random()
        return exponential * factor


class _UUID7:
    """UUIDv7 (RFC 9562) with a 12-bit counter in ``rand_a`` (its method 1), so ids made in
    one process are strictly increasing: jobs enqueued together keep their order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_ms = 0
        self._counter = 0

    def __call__(self) -> uuid.UUID:
        with self._lock:
            ms = time.time_ns() // 1_000_000
            if ms > self._last_ms:
                self._last_ms, self._counter = ms, int.from_bytes(os.urandom(1), "big")
            else:
                self._counter += 1
                if self._counter > 0xFFF:  # counter overflow: borrow the next millisecond
                    self._last_ms, self._counter = self._last_ms + 1, 0
            ms, counter = self._last_ms, self._counter
        rand_b = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
        value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | counter << 64 | 0b10 << 62 | rand_b
        return uuid.UUID(int=value)


new_job_id = _UUID7()
