"""The event model: what a job transition tells the browser, and how it looks on the wire.

An event is ``{family}_{phase}`` (``upload_progress``) or ``job_cancelled``. The family comes
from the job's kind (``media.process`` -> ``upload``); the phase from the transition's cause.
Its data is ``{jobId, progress?, message?, result?, error?}``. Every event has an id from
``job_events_id_seq``: ids grow in commit order (see migration 0003).

Two events are not about a job's transition, and go to the owner's stream only (their
``job_id`` is None; the job, if any, is named in the data):

- ``collection_updated``: a collection (issue 15) changed, by a sync through the API or
  because a job moved one of its items (review, replacement, delete, purge).
  ``collection_event`` builds it.
- ``ingest_progress`` with ``runId``: an ingest batch (issue 16) finished; the run's counts.
  ``ingest_progress_event`` builds it. The batch jobs themselves are silent
  (``SILENT_KINDS``): a 5M-file run would otherwise emit millions of job events nobody
  follows. The run's scan job has the family ``ingest_scan`` (``ingest_scan_started`` ...
  ``ingest_scan_complete``), so ``ingest_progress`` always means a run's counts.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from mediajobs.queue import kinds
from mediajobs.queue.models import Cause, Transition
from mediajobs.types import JSON

# Job kind -> event family, for the kinds of ``queue.kinds``. Kinds not listed here get the
# generic family "job" (e.g. system.ping -> job_started, job_complete).
FAMILIES: dict[str, str] = {
    kinds.MEDIA_PROCESS: "upload",
    kinds.MEDIA_REVIEW: "review",
    kinds.MEDIA_DELETE: "delete",
    kinds.MEDIA_PURGE: "delete",
    kinds.INGEST_SCAN: "ingest_scan",
}
# Kinds whose transitions emit no event at all: ingest batches report through one
# ``ingest_progress`` per batch instead (``ingest_progress_event``); image understanding is
# background work an owner did not ask for (its results show in the item's tags).
SILENT_KINDS: frozenset[str] = frozenset({kinds.INGEST_BATCH, kinds.MEDIA_EMBED})
GENERIC_FAMILY = "job"
CANCELLED = "job_cancelled"
RESYNC = "resync"  # sent instead of a replay the server can no longer give
STREAM_EXPIRED = "stream_expired"  # the ticket or token ran out: reconnect with a new one
STREAM_ERROR = "stream_error"  # a dependency failed (Postgres away): the stream ends; reconnect
COLLECTION_UPDATED = "collection_updated"
# Why a collection changed: a sync, or one of its items became ready (processed, no review),
# got its review outcome, was replaced (cutover), deleted, restored or purged.
COLLECTION_REASONS = ("sync", "ready", "review", "replaced", "deleted", "restored", "purged")
INGEST_PROGRESS = "ingest_progress"
# The file statuses that count as done in ``ingest_progress`` (``DONE_STATUSES`` of
# ``db/ingest.py``: indexed, then ai_done once media.embed has run, or failed).
INGEST_DONE_STATUSES = ("indexed", "ai_done", "failed")

_PHASES = {
    Cause.CLAIMED: "started",
    Cause.PROGRESS: "progress",
    Cause.SUCCEEDED: "complete",
    Cause.FAILED: "failed",
    # A failed attempt that will be retried, or a job requeued after its worker vanished, is
    # not terminal: clients see it as progress with a message (and the error, when any).
    Cause.RETRYING: "progress",
    Cause.REQUEUED: "progress",
}


def family(kind: str) -> str:
    """The event family of a job kind (``job`` for a kind without one of its own)."""
    return FAMILIES.get(kind, GENERIC_FAMILY)


def is_terminal(event_type: str) -> bool:
    """True for the last event a job emits: ``*_complete``, ``*_failed``, ``job_cancelled``."""
    return event_type == CANCELLED or event_type.endswith(("_complete", "_failed"))


@dataclass(frozen=True, slots=True)
class PendingEvent:
    """An event about to be written: everything but its id."""

    owner_id: str
    job_id: uuid.UUID | None  # None: an event no job emits (a collection sync)
    type: str
    data: str  # the payload as compact JSON text


@dataclass(slots=True)
class Event:
    """A recorded event. ``data`` is JSON text (one line), kept as text from the database or
    the Redis message to the socket; ``published_at`` (epoch seconds) is set on events that
    arrived live, for the publish-to-delivery lag."""

    id: int
    owner_id: str
    job_id: uuid.UUID | None
    type: str
    data: str
    published_at: float | None = None
    _frame: bytes | None = field(default=None, repr=False)

    @property
    def terminal(self) -> bool:
        return is_terminal(self.type)

    @property
    def frame(self) -> bytes:
        """The SSE frame, built once and shared by every connection that receives it."""
        if self._frame is None:
            self._frame = sse_frame(self.type, self.data, event_id=self.id)
        return self._frame

    def payload(self) -> dict[str, JSON]:
        value: dict[str, JSON] = json.loads(self.data)
        return value

    def to_message(self) -> dict[str, Any]:
        """The form carried in a Redis message."""
        return {
            "id": self.id,
            "owner": self.owner_id,
            "job": None if self.job_id is None else str(self.job_id),
            "type": self.type,
            "data": self.data,
        }

    @classmethod
    def from_message(cls, item: dict[str, Any], published_at: float | None) -> Event:
        return cls(
            id=int(item["id"]),
            owner_id=str(item["owner"]),
            job_id=None if item["job"] is None else uuid.UUID(item["job"]),
            type=str(item["type"]),
            data=str(item["data"]),
            published_at=published_at,
        )


def dumps(value: JSON) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def pending_event(transition: Transition) -> PendingEvent | None:
    """The event a transition emits, or None (a cancel request on a running job emits
    nothing until the handler stops; a job of a ``SILENT_KINDS`` kind emits nothing)."""
    if transition.kind in SILENT_KINDS:
        return None
    if transition.cause is Cause.CANCELLED:
        event_type = CANCELLED
    elif transition.cause in _PHASES:
        event_type = f"{family(transition.kind)}_{_PHASES[transition.cause]}"
    else:
        return None
    data: dict[str, JSON] = {"jobId": str(transition.job_id)}
    if transition.cause is Cause.PROGRESS and transition.progress is not None:
        data["progress"] = round(transition.progress, 4)
    if transition.message is not None:
        data["message"] = transition.message
    if transition.cause is Cause.RETRYING:
        data["message"] = f"attempt {transition.attempt} failed; retrying"
    if transition.cause is Cause.SUCCEEDED:
        data["result"] = transition.result
    if transition.error is not None:
        data["error"] = _public_error(transition.error)
    return PendingEvent(transition.owner_id, transition.job_id, event_type, dumps(data))


def pending_events(transitions: Iterable[Transition]) -> list[PendingEvent]:
    return [event for event in map(pending_event, transitions) if event is not None]


def collection_event(
    owner_id: str,
    entity_type: str,
    entity_id: str,
    version: int,
    reason: str,
    *,
    media_id: uuid.UUID | None = None,
    job_id: uuid.UUID | None = None,
) -> PendingEvent:
    """``collection_updated`` for the owner of ``entity_type/entity_id``, now at ``version``:
    data ``{entityType, entityId, version, reason, mediaId?, jobId?}``. ``reason`` is one of
    ``COLLECTION_REASONS`` (``ValueError`` otherwise); ``job_id`` is the job that changed it
    (None for a sync through the API), named in the data only: the event is the owner's, not
    part of that job's own stream."""
    if reason not in COLLECTION_REASONS:
        raise ValueError(f"unknown collection change reason {reason!r}")
    data: dict[str, JSON] = {
        "entityType": entity_type,
        "entityId": entity_id,
        "version": version,
        "reason": reason,
    }
    if media_id is not None:
        data["mediaId"] = str(media_id)
    if job_id is not None:
        data["jobId"] = str(job_id)
    return PendingEvent(owner_id, None, COLLECTION_UPDATED, dumps(data))


def ingest_progress_event(
    owner_id: str,
    run_id: uuid.UUID,
    counts: Mapping[str, int],
    *,
    total: int,
    failed_by_code: Mapping[str, int],
    job_id: uuid.UUID | None,
) -> PendingEvent:
    """``ingest_progress`` for the owner of ingest run ``run_id``, sent once per finished
    batch: data ``{runId, counts, total, done, failedByCode, jobId?}``. ``counts`` is the
    run's files per status (``pending``, ``indexed``, ``failed``, ...; as given, zeros
    included), ``total`` its files, ``done`` the files in ``INGEST_DONE_STATUSES`` (indexed,
    ai_done, failed), ``failedByCode`` the failed files per error code. ``job_id`` is the batch job
    that reported, named in the data only: the event is the owner's (``job_id`` None), like
    ``collection_updated``. Raises ``ValueError`` for a negative count or total."""
    if total < 0 or any(n < 0 for n in (*counts.values(), *failed_by_code.values())):
        raise ValueError("ingest counts cannot be negative")
    data: dict[str, JSON] = {
        "runId": str(run_id),
        "counts": {status: int(n) for status, n in counts.items()},
        "total": int(total),
        "done": sum(int(counts.get(status, 0)) for status in INGEST_DONE_STATUSES),
        "failedByCode": {code: int(n) for code, n in failed_by_code.items()},
    }
    if job_id is not None:
        data["jobId"] = str(job_id)
    return PendingEvent(owner_id, None, INGEST_PROGRESS, dumps(data))


def _public_error(error: dict[str, JSON]) -> dict[str, JSON]:
    """The error as clients see it: ``{code, message, retryable}`` and nothing else."""
    return {
        "code": str(error.get("code") or "error"),
        "message": str(error.get("message") or ""),
        "retryable": bool(error.get("retryable", False)),
    }


def sse_frame(event_type: str | None, data: str, *, event_id: int | None = None) -> bytes:
    """One Server-Sent Events frame. ``data`` must be one line (compact JSON is)."""
    parts: list[str] = []
    if event_id is not None:
        parts.append(f"id: {event_id}\n")
    if event_type is not None:
        parts.append(f"event: {event_type}\n")
    parts.append(f"data: {data}\n\n")
    return "".join(parts).encode()


def parse_last_event_id(values: Sequence[str | None]) -> int | None:
    """The first present value of Last-Event-ID / lastEventId as an event id; None when
    absent or empty. Raises ``ValueError`` for anything but a non-negative integer."""
    for value in values:
        if value is None or not value.strip():
            continue
        text = value.strip()
        if not text.isdigit() or len(text) > 19:
            raise ValueError(f"not an event id: {value!r}")
        return int(text)
    return None


class EntityVersion(Protocol):
    """An entity's collection at a version (``db.collections.EntityRef``)."""

    @property
    def entity_type(self) -> str: ...
    @property
    def entity_id(self) -> str: ...
    @property
    def owner_id(self) -> str: ...
    @property
    def version(self) -> int: ...


def collection_events(
    entities: Iterable[EntityVersion],
    reason: str,
    *,
    media_id: uuid.UUID | None = None,
    job_id: uuid.UUID | None = None,
) -> list[PendingEvent]:
    """``collection_updated`` for each of ``entities``, for the same ``reason``."""
    return [
        collection_event(
            e.owner_id,
            e.entity_type,
            e.entity_id,
            e.version,
            reason,
            media_id=media_id,
            job_id=job_id,
        )
        for e in entities
    ]
