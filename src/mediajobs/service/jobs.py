"""Job routes: one job, the caller's jobs, cancel and retry. Another user's job is a 404."""

from __future__ import annotations

import uuid

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mediajobs.queue.models import Job, JobSpec, JobState
from mediajobs.service.body import read_query
from mediajobs.service.errors import ApiError
from mediajobs.service.models import JobCancelled, JobList, JobQuery, JobRetried, JobView, to_json
from mediajobs.service.paging import decode_cursor, page_of
from mediajobs.service.state import Services, caller
from mediajobs.types import JSON


def job_view(job: Job) -> JobView:
    """A job as the API shows it: the fields of ``JobView``, read from the job's own."""
    return JobView.model_validate(job, from_attributes=True)


def job_json(job: Job) -> dict[str, JSON]:
    """A job as ``GET /jobs/{id}`` writes it."""
    return to_json(job_view(job))


async def _own_job(svc: Services, user_id: str, ident: str) -> Job:
    try:
        job_id = uuid.UUID(ident)
    except ValueError:
        raise ApiError(404, "job_not_found", "no such job") from None
    job = await svc.queue.get(job_id)
    if job is None or job.owner_id != user_id:
        raise ApiError(404, "job_not_found", "no such job")
    return job


async def get_job(request: Request) -> Response:
    svc, principal = caller(request)
    return JSONResponse(
        job_json(await _own_job(svc, principal.user_id, request.path_params["job_id"]))
    )


async def list_jobs(request: Request) -> Response:
    """``GET /jobs?state=&kind=&cursor=&limit=``: the caller's jobs, newest first."""
    svc, principal = caller(request)
    query = read_query(request, JobQuery)
    before = decode_cursor(query.cursor)
    jobs = await svc.queue.for_owner(
        principal.user_id, state=query.state, kind=query.kind, before=before, limit=query.limit + 1
    )
    jobs, cursor = page_of(jobs, query.limit)
    page = JobList(items=[job_view(job) for job in jobs], next_cursor=cursor)
    return JSONResponse(to_json(page))


async def cancel_job(request: Request) -> Response:
    """Cancel a queued job at once; ask a running one to stop. 409 once it has finished."""
    svc, principal = caller(request)
    job = await _own_job(svc, principal.user_id, request.path_params["job_id"])
    state = await svc.queue.cancel(job.id, owner_id=principal.user_id)
    if state is None:
        raise ApiError(409, "job_finished", f"the job already {job.state.value}")
    return JSONResponse(to_json(JobCancelled(job_id=job.id, state=state)), status_code=202)


async def retry_job(request: Request) -> Response:
    """Run a failed job again when its error is retryable (e.g. a review that had no
    provider): a new job with the same kind and payload; 202 with its id."""
    svc, principal = caller(request)
    job = await _own_job(svc, principal.user_id, request.path_params["job_id"])
    retryable = bool(job.error and job.error.get("retryable"))
    if job.state is not JobState.FAILED or not retryable:
        raise ApiError(
            409, "not_retryable", "only failed jobs with a retryable error can be retried"
        )
    again = await svc.queue.enqueue(
        JobSpec(
            job.kind,
            job.owner_id,
            job.payload,
            max_attempts=job.max_attempts,
            idempotency_key=f"retry:{job.id}",
        )
    )
    return JSONResponse(to_json(JobRetried(job_id=again.id, retry_of=job.id)), status_code=202)
