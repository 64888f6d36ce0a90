"""The event model: transitions to events, SSE frames, Last-Event-ID parsing."""

from __future__ import annotations

import json
import uuid

import pytest

from mediajobs.queue.models import Cause, JobState, Transition
from mediajobs.realtime.events import (
    Event,
    family,
    is_terminal,
    parse_last_event_id,
    pending_event,
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
        ("system.ping", "job"),
        # Kinds nothing enqueues yet have no family of their own (issue 14).
        ("media.generate_image", "job"),
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
