"""The worker's log line about a failed attempt: its verdict by resulting state, the fields
a handler named, and quoting that keeps one line per outcome whatever a file is called."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime

from mediajobs.errors import JobFailed, Retry
from mediajobs.queue.models import Job, JobState
from mediajobs.queue.registry import JobContext
from mediajobs.queue.worker import describe_outcome, outcome_level


def context() -> JobContext:
    now = datetime.now(UTC)
    job = Job(
        uuid.UUID(int=7), "media.process", "u", {}, JobState.RUNNING, 0, now, 2, 3, "w", now,
        False, 0.0, None, None, None, None, now, now, now, None,
    )  # fmt: skip
    return JobContext(job, queue=None, worker_name="w")  # type: ignore[arg-type]


def test_a_failed_job_names_kind_job_attempt_the_handler_fields_and_code():
    ctx = context()
    ctx.describe(mediaId="m-1", fileName="IMG_0001.HEIC", ignored=None)
    line = describe_outcome(
        ctx, JobState.FAILED, JobFailed("not an image", code="corrupt_image"), delay=0
    )
    assert line == (
        f"job failed: kind=media.process job={uuid.UUID(int=7)} attempt=2/3 mediaId=m-1 "
        'fileName=IMG_0001.HEIC code=corrupt_image message="not an image"'
    )


def test_a_retried_attempt_and_a_cancelled_job_say_so():
    ctx = context()
    retry = describe_outcome(ctx, JobState.QUEUED, Retry("timeout", code="store_down"), delay=4)
    assert retry.startswith("job attempt failed, retrying in 4.0s: kind=media.process")
    assert retry.endswith("code=store_down message=timeout")
    cancelled = describe_outcome(ctx, JobState.CANCELLED, JobFailed("x", code="y"), delay=0)
    assert cancelled.startswith("job cancelled: kind=media.process")


def test_file_names_with_spaces_quotes_newlines_or_emoji_are_json_quoted():
    ctx = context()
    ctx.describe(fileName='a "b"\nc=d 🌅.jpg')
    line = describe_outcome(ctx, JobState.FAILED, JobFailed("m", code="c"), delay=0)
    assert 'fileName="a \\"b\\"\\nc=d 🌅.jpg"' in line
    assert "\n" not in line
    ctx.describe(fileName="a\u2028b\x85c\u2029d")
    line = describe_outcome(ctx, JobState.FAILED, JobFailed("m", code="c"), delay=0)
    assert 'fileName="a\\u2028b\\u0085c\\u2029d"' in line
    assert len(line.splitlines()) == 1


def test_a_job_refused_for_its_input_is_a_warning_and_an_internal_failure_an_error():
    for code in ("too_small", "unsupported_type", "corrupt_image"):
        assert outcome_level(JobState.FAILED, JobFailed("m", code=code)) == logging.WARNING
    assert outcome_level(JobState.FAILED, Retry("boom", code="internal_error")) == logging.ERROR
    assert outcome_level(JobState.FAILED, Retry("down", code="store_down")) == logging.ERROR
    assert outcome_level(JobState.FAILED, JobFailed("m", code="unknown_kind")) == logging.ERROR
    assert outcome_level(JobState.FAILED, JobFailed("m", code="invalid_result")) == logging.ERROR
    assert outcome_level(JobState.QUEUED, Retry("down", code="store_down")) == logging.WARNING
    assert outcome_level(JobState.CANCELLED, JobFailed("m", code="x")) == logging.WARNING
