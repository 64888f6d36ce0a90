"""The event model: transitions to events, SSE frames, Last-Event-ID parsing."""

from __future__ import annotations

import json
import uuid

import pytest

from mediajobs.queue.models import Cause, JobState, Transition
from mediajobs.realtime.events import (
    INGEST_PROGRESS,
    Event,
    family,
    ingest_progress_event,
    is_terminal,
    parse_last_event_id,
    pending_event,
    pending_events,
    sse_frame,
)

JOB = uuid.UUID("01a20dd0-0000-7000-8000-000000000001")


def transition(kind: str, cause: Cause, state: JobState = JobState.RUNNING, **extra: object):
    return Transition(JOB, "alice", kind, state, 1, cause, **extra)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("media.process", "upload"),
        ("media.review", "review"),
        ("media.delete", "delete"),
        ("media.purge", "delete"),
        ("ingest.scan", "ingest_scan"),
        ("system.ping", "job"),
        # Kinds nothing enqueues yet have no family of their own (issue 14).
        ("media.generate_image", "job"),
        # Ingest batches emit no job events at all (SILENT_KINDS), whatever their family.
        ("ingest.batch", "job"),
    ],
)
def test_a_kind_maps_to_its_event_family(kind, expected):
    assert family(kind) == expected


def test_each_cause_becomes_the_documented_event_with_its_payload():
    started = pending_event(transition("media.process", Cause.CLAIMED, progress=0.0))
    assert started is not None
    assert (started.type, json.loads(started.data)) == ("upload_started", {"jobId": str(JOB)})

    progress = pending_event(
        transition("media.process", Cause.PROGRESS, progress=0.123456, message="decoding")
    )
    assert progress is not None and progress.type == "upload_progress"
    assert json.loads(progress.data) == {
        "jobId": str(JOB),
        "progress": 0.1235,
        "message": "decoding",
    }

    done = pending_event(
        transition(
            "media.process",
            Cause.SUCCEEDED,
            JobState.SUCCEEDED,
            result={"url": "https://cdn/x.webp"},
        )
    )
    assert done is not None and done.type == "upload_complete"
    assert json.loads(done.data) == {"jobId": str(JOB), "result": {"url": "https://cdn/x.webp"}}

    error = {"code": "corrupt_image", "message": "truncated", "retryable": False, "at": "x"}
    failed = pending_event(transition("media.review", Cause.FAILED, JobState.FAILED, error=error))
    assert failed is not None and failed.type == "review_failed"
    assert json.loads(failed.data)["error"] == {
        "code": "corrupt_image",
        "message": "truncated",
        "retryable": False,
    }

    cancelled = pending_event(transition("media.delete", Cause.CANCELLED, JobState.CANCELLED))
    assert cancelled is not None and cancelled.type == "job_cancelled"


def test_a_retry_is_progress_with_the_error_not_a_terminal_failure():
    error = {"code": "storage_unavailable", "message": "503", "retryable": True}
    event = pending_event(transition("media.process", Cause.RETRYING, JobState.QUEUED, error=error))
    assert event is not None and event.type == "upload_progress"
    assert not is_terminal(event.type)
    data = json.loads(event.data)
    assert data["error"]["code"] == "storage_unavailable"
    assert data["message"] == "attempt 1 failed; retrying"


def test_the_ingest_scan_job_emits_the_ingest_scan_family():
    started = pending_event(transition("ingest.scan", Cause.CLAIMED, progress=0.0))
    done = pending_event(transition("ingest.scan", Cause.SUCCEEDED, JobState.SUCCEEDED))
    assert started is not None and done is not None
    assert (started.type, done.type) == ("ingest_scan_started", "ingest_scan_complete")
    assert is_terminal(done.type)


@pytest.mark.parametrize("cause", list(Cause))
def test_an_ingest_batch_emits_no_job_event_whatever_happens_to_it(cause):
    state = {Cause.SUCCEEDED: JobState.SUCCEEDED, Cause.FAILED: JobState.FAILED}.get(
        cause, JobState.RUNNING
    )
    error = {"code": "internal_error", "message": "x", "retryable": False}
    silent = transition("ingest.batch", cause, state, progress=0.5, error=error)
    assert pending_event(silent) is None
    # ... while the same transition of another kind does emit (but a cancel request)
    loud = transition("ingest.scan", cause, state, progress=0.5, error=error)
    assert pending_events([silent, loud]) == (
        [] if cause is Cause.CANCEL_REQUESTED else [pending_event(loud)]
    )


def test_ingest_progress_carries_the_runs_counts_on_the_owners_stream():
    run = uuid.UUID("01a20dd0-0000-7000-8000-0000000000aa")
    counts = {"pending": 90, "processed": 0, "uploaded": 0, "indexed": 7, "failed": 3}
    event = ingest_progress_event(
        "alice",
        run,
        counts,
        total=100,
        failed_by_code={"corrupt_image": 2, "empty_file": 1},
        job_id=JOB,
    )
    assert (event.owner_id, event.job_id, event.type) == ("alice", None, INGEST_PROGRESS)
    assert event.type == "ingest_progress" and not is_terminal(event.type)
    assert json.loads(event.data) == {
        "runId": str(run),
        "counts": counts,
        "total": 100,
        "done": 10,
        "failedByCode": {"corrupt_image": 2, "empty_file": 1},
        "jobId": str(JOB),
    }
    bare = ingest_progress_event("alice", run, {}, total=0, failed_by_code={}, job_id=None)
    assert json.loads(bare.data) == {
        "runId": str(run),
        "counts": {},
        "total": 0,
        "done": 0,
        "failedByCode": {},
    }
    with pytest.raises(ValueError, match="negative"):
        ingest_progress_event("alice", run, {"failed": -1}, total=1, failed_by_code={}, job_id=None)


def test_a_cancel_request_on_a_running_job_emits_nothing_until_it_stops():
    assert pending_event(transition("media.process", Cause.CANCEL_REQUESTED)) is None


@pytest.mark.parametrize(
    ("event_type", "terminal"),
    [
        ("upload_complete", True),
        ("ingest_failed", True),
        ("job_cancelled", True),
        ("upload_progress", False),
        ("upload_started", False),
    ],
)
def test_terminal_events(event_type, terminal):
    assert is_terminal(event_type) is terminal


def test_frames_carry_id_event_and_one_data_line():
    event = Event(42, "alice", JOB, "upload_progress", '{"jobId":"x","message":"a\\nb"}')
    assert event.frame == (
        b'id: 42\nevent: upload_progress\ndata: {"jobId":"x","message":"a\\nb"}\n\n'
    )
    assert sse_frame(None, "{}") == b"data: {}\n\n"


def test_last_event_id_comes_from_the_header_first_then_the_query():
    assert parse_last_event_id(["17", "3"]) == 17
    assert parse_last_event_id([None, "3"]) == 3
    assert parse_last_event_id(["", " "]) is None
    for bad in ("-1", "abc", "1e3", "9" * 20):
        with pytest.raises(ValueError, match="not an event id"):
            parse_last_event_id([bad])


def test_a_redis_message_round_trips_events_with_their_publish_time():
    from mediajobs.realtime.publisher import decode_message, encode_message

    events = [Event(1, "alice", JOB, "job_started", '{"jobId":"x"}')]
    [back] = decode_message(encode_message(events, 1234.5))
    assert (back.id, back.owner_id, back.job_id, back.type, back.data) == (
        1,
        "alice",
        JOB,
        "job_started",
        '{"jobId":"x"}',
    )
    assert back.published_at == 1234.5
