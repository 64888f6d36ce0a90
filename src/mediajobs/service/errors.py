"""One error shape for every HTTP error: ``{"error": {"code", "message"}}``.

A dependency that is down answers 503 with ``Retry-After`` and a code naming it:
``database_unavailable`` (pool timeout, connection lost, server shutting down),
``events_unavailable`` (Redis unreachable), ``storage_unavailable`` (the store failed).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus

import psycopg
from psycopg_pool import PoolTimeout
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from mediajobs.errors import AuthError, DatabaseError, MediaJobsError, StorageUnavailable

log = logging.getLogger(__name__)


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message}}, status_code=status, headers=headers
    )


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    status = HTTPStatus(exc.status_code)
    code = status.phrase.lower().replace(" ", "_").replace("-", "_")
    message = exc.detail if isinstance(exc.detail, str) and exc.detail else status.phrase
    return error_response(exc.status_code, code, message, exc.headers)


async def auth_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AuthError)
    headers = None
    if exc.status == 401:
        # RFC 6750: no error attribute when the request carried no credentials at all.
        challenge = 'Bearer realm="mediajobs"'
        if exc.code != "missing_credentials":
            challenge += ', error="invalid_token"'
        headers = {"WWW-Authenticate": challenge}
    return error_response(exc.status, exc.code, str(exc), headers)


class ApiError(MediaJobsError):
    """Raised by a route to answer with the error envelope."""

    def __init__(
        self, status: int, code: str, message: str, *, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.headers = headers


async def api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, str(exc), exc.headers)


async def data_error(request: Request, exc: Exception) -> Response:
    """Input Postgres cannot store (a NUL in text, an out-of-range number) that slipped past
    validation: the caller's fault, so a 400, and logged so the validation gets fixed."""
    log.warning("input refused by Postgres on %s %s: %s", request.method, request.url.path, exc)
    return error_response(400, "invalid_input", "the request holds a value that cannot be stored")


RETRY_AFTER = 5  # seconds a client waits before retrying a request a dependency outage refused

UNAVAILABLE: tuple[tuple[tuple[type[BaseException], ...], str, str], ...] = (
    (
        (PoolTimeout, psycopg.OperationalError, psycopg.InterfaceError, DatabaseError),
        "database_unavailable",
        "the database is unavailable; retry later",
    ),
    (
        (RedisConnectionError, RedisTimeoutError),
        "events_unavailable",
        "the event service is unavailable; retry later",
    ),
    ((StorageUnavailable,), "storage_unavailable", "the storage is unavailable; retry later"),
)


def unavailable_code(exc: BaseException) -> tuple[str, str] | None:
    """``(code, message)`` when ``exc`` means a dependency is down (a 503), else None."""
    for kinds, code, message in UNAVAILABLE:
        if isinstance(exc, kinds):
            return code, message
    return None


async def dependency_error(request: Request, exc: Exception) -> Response:
    """A dependency is down: 503 with Retry-After, logged once per request without the
    traceback (the outage, not a bug)."""
    found = unavailable_code(exc)
    assert found is not None
    code, message = found
    log.warning(
        "%s on %s %s: %s: %s", code, request.method, request.url.path, type(exc).__name__, exc
    )
    return error_response(503, code, message, {"Retry-After": str(RETRY_AFTER)})


CLIENT_CLOSED = 499  # nginx's "client closed request": the answer is never delivered


async def client_gone(request: Request, exc: Exception) -> Response:
    """The client went away before its body arrived: nobody to answer and nothing wrong here,
    so no error log and no 5xx in the metrics; 499 (nginx's convention) counts it."""
    log.info("client closed %s %s before its body arrived", request.method, request.url.path)
    return Response(status_code=CLIENT_CLOSED)


async def internal_error(request: Request, exc: Exception) -> Response:
    if unavailable_code(exc) is not None:  # raised inside another exception's handling
        return await dependency_error(request, exc)
    request.scope["mediajobs.error_logged"] = True
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal_error", "the server failed to handle this request")


EXCEPTION_HANDLERS = {
    HTTPException: http_error,
    AuthError: auth_error,
    ApiError: api_error,
    psycopg.DataError: data_error,
    ClientDisconnect: client_gone,
    **{kind: dependency_error for kinds, _, _ in UNAVAILABLE for kind in kinds},
    Exception: internal_error,
}
