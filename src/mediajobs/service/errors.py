"""One error shape for every HTTP error: ``{"error": {"code", "message"}}``."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus

import psycopg
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mediajobs.errors import AuthError

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


class ApiError(Exception):
    """Raised by a route to answer with the error envelope."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


async def api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, str(exc))


async def data_error(request: Request, exc: Exception) -> Response:
    """Input Postgres cannot store (a NUL in text, an out-of-range number) that slipped past
    validation: the caller's fault, so a 400, and logged so the validation gets fixed."""
    log.warning("input refused by Postgres on %s %s: %s", request.method, request.url.path, exc)
    return error_response(400, "invalid_input", "the request holds a value that cannot be stored")


async def internal_error(request: Request, exc: Exception) -> Response:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal_error", "the server failed to handle this request")


EXCEPTION_HANDLERS = {
    HTTPException: http_error,
    AuthError: auth_error,
    ApiError: api_error,
    psycopg.DataError: data_error,
    Exception: internal_error,
}
