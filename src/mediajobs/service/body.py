"""Request bodies and query parameters: read into their models (``service/models.py``),
refused with the error envelope.

A body must be a JSON object of known fields with the right types; anything else is a 4xx
that names the problem. The JSON is strict (``loads_strict``): ``NaN``, ``Infinity`` and an
object with a key given twice are not JSON here (400 ``malformed_json``), and an integer too
long for Python to read is a number past every field's range (422 ``invalid_field`` naming
the field) (``malformed_json``, ``unknown_field``, ``invalid_field``,
``missing_field``, ``body_too_large``, ``invalid_text``, ``request_timeout`` when the body
does not arrive whole within BODY_TIMEOUT). Text must be Unicode: a lone UTF-16
surrogate (``"\\ud800"``) anywhere in a body is refused (400 ``invalid_text``), and so is
JSON nested too deeply for the parser (400 ``malformed_json``). A query parameter that is
not what its model says is 400 ``invalid_query``.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any, TypeVar

from pydantic import ValidationError
from starlette.requests import Request

from mediajobs.service.errors import ApiError
from mediajobs.service.models import Body, Query, describe, first_error, unknown_field

MAX_BODY_BYTES = 64 * 1024
# Digits an integer may have and still be read as itself; a longer one stands for a number
# past every field's range. Python's own limit (CVE-2020-10735) when it has one.
MAX_INT_DIGITS = sys.get_int_max_str_digits() or 4300
BODY_TIMEOUT = 30.0  # seconds a JSON body may take to arrive whole (64 KiB: ample)

B = TypeVar("B", bound=Body)
Q = TypeVar("Q", bound=Query)


async def read_body(request: Request, model: type[B], *, allow_empty: bool = False) -> B:
    """The body as ``model``; an empty body is an empty object when ``allow_empty``."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise ApiError(413, "body_too_large", f"bodies are limited to {MAX_BODY_BYTES} bytes")
    raw = bytearray()
    try:
        async with asyncio.timeout(BODY_TIMEOUT):
            async for chunk in request.stream():
                raw += chunk
                if len(raw) > MAX_BODY_BYTES:
                    raise ApiError(
                        413, "body_too_large", f"bodies are limited to {MAX_BODY_BYTES} bytes"
                    )
    except TimeoutError:
        raise ApiError(
            408, "request_timeout", f"the body did not arrive within {BODY_TIMEOUT:g} s"
        ) from None
    return parse_body(bytes(raw), model, allow_empty=allow_empty)


def parse_body(raw: bytes, model: type[B], *, allow_empty: bool = False) -> B:
    """``raw`` JSON as ``model``, or the ``ApiError`` that says what is wrong with it."""
    if not raw.strip() and allow_empty:
        raw = b"{}"
    try:
        body, overlong = loads_strict(raw) if raw else (None, False)
    except _NotStrictJson as exc:
        raise ApiError(400, "malformed_json", f"the body is not valid JSON: {exc}") from None
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "malformed_json", "the body is not valid JSON") from None
    except RecursionError:
        raise ApiError(400, "malformed_json", "the body is nested too deeply") from None
    if not is_unicode(body):
        raise ApiError(400, "invalid_text", "the body holds a lone UTF-16 surrogate") from None
    if not isinstance(body, dict):
        raise ApiError(400, "malformed_json", "the body must be a JSON object")
    try:
        parsed = model.model_validate(body)
    except ValidationError as exc:
        raise body_error(exc) from None
    if overlong:  # no field takes such a number; never store its stand-in
        raise ApiError(
            422, "invalid_field", f"a number in the body has more than {MAX_INT_DIGITS} digits"
        )
    return parsed


class _NotStrictJson(ValueError):
    """Text ``json.loads`` would take that is not strict JSON: ``NaN``, ``Infinity``, or an
    object with a key given twice."""


def loads_strict(raw: bytes | str) -> tuple[Any, bool]:
    """``raw`` as strict JSON (RFC 8259 without its leniencies), and whether an integer in it
    was longer than ``MAX_INT_DIGITS``: such an integer is read as ``±10**digits``, a stand-in
    past every range, so the field that holds it can be named. ``_NotStrictJson`` for
    ``NaN``/``Infinity``/``-Infinity`` and for duplicate keys; ``ValueError`` otherwise."""
    overlong = False

    def number(text: str) -> int:
        nonlocal overlong
        digits = text.lstrip("-")
        if len(digits) <= MAX_INT_DIGITS:
            return int(text)
        overlong = True
        magnitude: int = 10 ** len(digits)
        return -magnitude if text.startswith("-") else magnitude

    def constant(text: str) -> Any:
        raise _NotStrictJson(f"{text} is not a JSON number")

    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in pairs:
            if key in out:
                raise _NotStrictJson(f"duplicate key {key!r}")
            out[key] = value
        return out

    value = json.loads(raw, parse_int=number, parse_constant=constant, object_pairs_hook=unique)
    return value, overlong


def body_error(exc: ValidationError) -> ApiError:
    """The error envelope of a body the model refused: 400 ``unknown_field``, 422
    ``missing_field`` or 422 ``invalid_field``, naming the field by its API name."""
    error = first_error(exc.errors(include_url=False))
    field, problem = describe(error)
    if unknown_field(error):
        return ApiError(400, "unknown_field", f"unknown field {field!r}")
    if error["type"] == "missing" and len(error["loc"]) == 1:
        return ApiError(422, "missing_field", f"{field} is required")
    return ApiError(422, "invalid_field", f"{field}: {problem}")


def read_query(request: Request, model: type[Q]) -> Q:
    """The query parameters as ``model`` (an empty value is an absent one); 400
    ``invalid_query`` naming the parameter."""
    params = {name: value for name, value in request.query_params.items() if value != ""}
    try:
        return model.model_validate(params)
    except ValidationError as exc:
        field, problem = describe(first_error(exc.errors(include_url=False)))
        raise ApiError(400, "invalid_query", f"{field}: {problem}") from None


def is_unicode(value: Any) -> bool:
    """True when every string in a parsed JSON value (keys included) is encodable Unicode:
    ``json.loads`` turns an unpaired ``\\ud800`` escape (or raw surrogate bytes) into a lone
    surrogate that no UTF-8 encoder, Postgres or JSON response can carry. Iterative: the
    value may be nested as deep as the parser allows."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return False
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return True
