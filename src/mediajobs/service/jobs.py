"""Job routes: one job, the caller's jobs, cancel and retry. Another user's job is a 404."""

from __future__ import annotations

import uuid

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mediajobs.queue.models import Job, JobSpec, JobState
from mediajobs.service.body import decode_cursor, page_of, query_choice, query_int, query_text
from mediajobs.service.errors import ApiError
from mediajobs.service.state import Services, caller
from mediajobs.types import JSON

STATES = tuple(state.value for state in JobState)
KIND_PATTERN = r"[a-z][a-z0-9_.]{0,63}"


def job_json(job: Job) -> JSON:
    return {
        "id": str(job.id),
        "kind": job.kind,
        "state": job.state.value,
        "progress": job.progress,
        "message": job.message,
        "result": job.result,
        "error": job.error,
        "attempt": job.attempt,
        "maxAttempts": job.max_attempts,
        "payload": job.payload,
        "createdAt": job.created_at.isoformat(),
        "updatedAt": job.updated_at.isoformat(),
        "startedAt": job.started_at.isoformat() if job.started_at else None,
        "finishedAt": job.finished_at.isoformat() if job.finished_at else None,
    }


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
    state = query_choice(request, "state", STATES)
    kind = query_text(request, "kind", KIND_PATTERN)
    limit = query_int(request, "limit", 50, 1, 200)
    before = decode_cursor(request.query_params.get("cursor"))
    jobs = await svc.queue.for_owner(
        principal.user_id,
        state=JobState(state) if state else None,
        kind=kind,
        before=before,
        limit=limit + 1,
    )
    jobs, cursor = page_of(jobs, limit)
    return JSONResponse({"items": [job_json(job) for job in jobs], "nextCursor": cursor})


async def cancel_job(request: Request) -> Response:
    """Cancel a queued job at once; ask a running one to stop. 409 once it has finished."""
    svc, principal = caller(request)
    job = await _own_job(svc, principal.user_id, request.path_params["job_id"])
    state = await svc.queue.cancel(job.id, owner_id=principal.user_id)
    if state is None:
        raise ApiError(409, "job_finished", f"the job already {job.state.value}")
    return JSONResponse({"jobId": str(job.id), "state": state.value}, status_code=202)


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
    return JSONResponse({"jobId": str(again.id), "retryOf": str(job.id)}, status_code=202)
