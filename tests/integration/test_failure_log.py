"""The worker's log line about a failed media job names the job's kind, job id, media id,
file name and error code, so an operator can tell which upload failed and why."""

from __future__ import annotations

import logging

import pytest

from mediajobs.queue import JobState
from tests.support.images import jpeg, photo
from tests.support.media import media_env, memory_store

pytestmark = pytest.mark.timeout(120)


async def test_a_failed_media_job_is_logged_with_its_kind_ids_file_name_and_code(
    database_url: str, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mediajobs.queue.worker")
    with memory_store() as store:
        async with media_env(database_url, redis_url, store) as env:
            cut = jpeg(photo(1200, 900))[:5000]
            media_id, job_id = await env.upload(cut, 'beach "day" 1.jpg')
            job = await env.finished(job_id)
    assert job.state is JobState.FAILED
    assert job.error is not None and job.error["code"] == "corrupt_image"
    [line] = [r for r in caplog.records if r.message.startswith("job failed:")]
    assert line.levelno == logging.WARNING  # the upload's fault, not the service's
    assert line.message.startswith(
        f"job failed: kind=media.process job={job_id} attempt=1/3 mediaId={media_id} "
        'fileName="beach \\"day\\" 1.jpg" code=corrupt_image message='
    )
