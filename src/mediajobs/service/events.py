"""Routes of the realtime layer: the SSE streams, stream tickets and ``/metrics``.

One user may hold at most ``MEDIAJOBS_STREAMS_PER_USER`` open streams in one API process
(each holds a connection and a descriptor); one more is 429 ``too_many_streams``.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from mediajobs.errors import AuthError
from mediajobs.realtime.events import parse_last_event_id
from mediajobs.realtime.sse import EventStreamResponse
from mediajobs.service.auth import Principal
from mediajobs.service.body import read_query
from mediajobs.service.errors import ApiError
from mediajobs.service.models import EventsQuery, Ticket, to_json
from mediajobs.service.state import Services, StreamSlots, services


class _Slotted(Response):
    """A stream response that gives its slot back when it ends, however it ends."""

    def __init__(self, stream: Response, slots: StreamSlots, owner_id: str) -> None:
        self._stream = stream
        self._slots = slots
        self._owner_id = owner_id
        slots.take(owner_id)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self._stream(scope, receive, send)
        finally:
            self._slots.give_back(self._owner_id)


def _stream_principal(request: Request, svc: Services, query: EventsQuery) -> Principal:
    """Bearer header for fetch-based clients, else the ``ticket`` query parameter."""
    ticket = query.ticket
    if ticket and not request.headers.get("authorization"):
        return svc.auth.ticket(ticket)
    return svc.auth.bearer(request.headers.get("authorization"))


def _last_event_id(request: Request, query: EventsQuery) -> int | None:
    try:
        return parse_last_event_id([request.headers.get("last-event-id"), query.last_event_id])
    except ValueError as exc:
        raise ApiError(400, "invalid_last_event_id", str(exc)) from None


async def events(request: Request) -> Response:
    """``GET /events``: every event of the caller's jobs, resumable with Last-Event-ID."""
    svc = services(request)
    query = read_query(request, EventsQuery)
    principal = _stream_principal(request, svc, query)
    stream = EventStreamResponse(
        svc.hub,
        svc.events,
        svc.stream_options,
        owner_id=principal.user_id,
        last_event_id=_last_event_id(request, query),
        expires_at=principal.expires_at,
    )
    return _Slotted(stream, svc.stream_slots, principal.user_id)


async def job_events(request: Request) -> Response:
    """``GET /jobs/{id}/events``: one job's events from its first; ends after its last."""
    svc = services(request)
    query = read_query(request, EventsQuery)
    principal = _stream_principal(request, svc, query)
    try:
        job_id = uuid.UUID(request.path_params["job_id"])
    except ValueError:
        raise ApiError(404, "job_not_found", "no such job") from None
    last_event_id = _last_event_id(request, query)
    job = await svc.queue.get(job_id)
    if job is None or job.owner_id != principal.user_id:
        # Another user's job answers exactly like a missing one.
        raise ApiError(404, "job_not_found", "no such job")
    stream = EventStreamResponse(
        svc.hub,
        svc.events,
        svc.stream_options,
        owner_id=principal.user_id,
        last_event_id=last_event_id,
        expires_at=principal.expires_at,
        job_id=job_id,
        job_finished=job.state.finished,
    )
    return _Slotted(stream, svc.stream_slots, principal.user_id)


async def ticket(request: Request) -> Response:
    """``POST /events/ticket``: a short-lived ticket for ``EventSource`` (which cannot send
    an Authorization header): ``GET /events?ticket=...``."""
    svc = services(request)
    principal = svc.auth.bearer(request.headers.get("authorization"))
    value, expires_at = svc.auth.issue_ticket(principal)
    if expires_at <= datetime.now(UTC).timestamp():
        raise AuthError("token_expired", "the token expires before a ticket could be used")
    answer = Ticket(ticket=value, expires_at=datetime.fromtimestamp(expires_at, UTC))
    return JSONResponse(to_json(answer), headers={"Cache-Control": "no-store"})


async def metrics(request: Request) -> Response:
    """``GET /metrics``: Prometheus text."""
    svc = services(request)
    await svc.queue_gauges.refresh(svc.queue)
    return Response(svc.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
