"""Per-request context: a request id (taken from ``X-Request-Id`` when sane, else made),
echoed in the response and attached to every log line of the request; and the request's
count and latency by route template for ``/metrics``."""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mediajobs.logs import REQUEST_ID
from mediajobs.service.metrics import HttpMetrics

log = logging.getLogger(__name__)

_SANE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_STREAMING = {"/events", "/jobs/{job_id}/events"}  # open for minutes: not a latency


class RequestContext:
    """The outermost layer of the app (outside Starlette's ServerErrorMiddleware), so the
    500 that layer sends carries ``X-Request-Id`` too, and its log line the id."""

    def __init__(self, app: ASGIApp, metrics: HttpMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if _SANE_ID.match(incoming) else uuid.uuid4().hex
        token = REQUEST_ID.set(request_id)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            # ServerErrorMiddleware re-raises after its 500 went out. That error was logged
            # (with this id) by the 500 handler; one that broke a started response (a
            # stream) is logged here. Either way the server has nothing left to report, and
            # the id stays set for what it logs about the unfinished response.
            if not scope.get("mediajobs.error_logged"):
                log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            self._count(scope, status, started)
            return
        self._count(scope, status, started)
        REQUEST_ID.reset(token)

    def _count(self, scope: Scope, status: int, started: float) -> None:
        route = scope.get("route")
        template = getattr(route, "path", None) or "unmatched"
        method = scope["method"]
        self.metrics.requests.labels(method, template, str(status)).inc()
        if template not in _STREAMING:
            self.metrics.latency.labels(method, template).observe(time.perf_counter() - started)
