"""Request bodies and query parameters: parsed strictly, refused with the error envelope.

A body must be a JSON object of known fields with the right types; anything else is a 4xx
that names the problem (``malformed_json``, ``unknown_field``, ``invalid_field``,
``missing_field``, ``body_too_large``, ``invalid_text``, ``request_timeout`` when the body
does not arrive whole within BODY_TIMEOUT). Text must be Unicode: a lone UTF-16
surrogate (``"\\ud800"``) anywhere in a body is refused (400 ``invalid_text``), and so is
JSON nested too deeply for the parser (400 ``malformed_json``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar

from starlette.requests import Request

from mediajobs.service.errors import ApiError

MAX_BODY_BYTES = 64 * 1024
BODY_TIMEOUT = 30.0  # seconds a JSON body may take to arrive whole (64 KiB: ample)


@dataclass(frozen=True)
class Field:
    """One body field: its JSON types, whether it is required, and an optional check that
    returns an error message (or None)."""

    types: tuple[type, ...]
    required: bool = False
    nullable: bool = False
    check: Callable[[Any], str | None] | None = None


# Control characters other than tab and line breaks, and the bidirectional embeddings,
# overrides and isolates that can make text read other than it is (Unicode TR36 3.1.1).
_UNPRINTABLE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def text(
    max_length: int, *, pattern: str | None = None, printable: bool = False
) -> Callable[[Any], str | None]:
    """A check of a text field: at most ``max_length`` characters, no NUL, matching
    ``pattern`` when given; with ``printable``, also no other control characters (tab and
    line breaks aside) and no bidirectional overrides (text shown to people)."""
    regex = re.compile(pattern) if pattern else None

    def check(value: Any) -> str | None:
        if len(value) > max_length:
            return f"at most {max_length} characters"
        if "\x00" in value:
            return "must not contain NUL characters"
        if printable and _UNPRINTABLE.search(value):
            return "must not contain control characters or bidirectional overrides"
        if regex is not None and not regex.fullmatch(value):
            return f"must match {pattern}"
        return None

    return check


def integer(low: int, high: int) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if low <= value <= high else f"must be {low}..{high}"

    return check


async def read_json(
    request: Request, fields: Mapping[str, Field], *, allow_empty: bool = False
) -> dict[str, Any]:
    """The body as a dict of the given fields (absent optional fields left out); an empty
    body is ``{}`` when ``allow_empty``."""
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
    if not raw.strip() and allow_empty:
        return {}
    try:
        body = json.loads(raw) if raw else None
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "malformed_json", "the body is not valid JSON") from None
    except RecursionError:
        raise ApiError(400, "malformed_json", "the body is nested too deeply") from None
    if not is_unicode(body):
        raise ApiError(400, "invalid_text", "the body holds a lone UTF-16 surrogate") from None
    if not isinstance(body, dict):
        raise ApiError(400, "malformed_json", "the body must be a JSON object")
    unknown = sorted(set(body) - set(fields))
    if unknown:
        raise ApiError(400, "unknown_field", f"unknown field {unknown[0]!r}")
    out: dict[str, Any] = {}
    for name, field in fields.items():
        if name not in body:
            if field.required:
                raise ApiError(422, "missing_field", f"{name} is required")
            continue
        value = body[name]
        if value is None and field.nullable:
            out[name] = None
            continue
        if not _is(value, field.types):
            names = " or ".join(_json_name(t) for t in field.types)
            raise ApiError(422, "invalid_field", f"{name} must be {names}")
        problem = field.check(value) if field.check else None
        if problem:
            raise ApiError(422, "invalid_field", f"{name}: {problem}")
        out[name] = value
    return out


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


def _is(value: Any, types: tuple[type, ...]) -> bool:
    if isinstance(value, bool):
        return bool in types
    if float in types and isinstance(value, int | float):
        return True
    return isinstance(value, types)


def _json_name(kind: type) -> str:
    return {str: "a string", int: "an integer", float: "a number", bool: "a boolean"}.get(
        kind, kind.__name__
    )


def query_int(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "invalid_query", f"{name} must be an integer") from None
    if not low <= value <= high:
        raise ApiError(400, "invalid_query", f"{name} must be {low}..{high}")
    return value


def query_text(request: Request, name: str, pattern: str) -> str | None:
    """A text parameter that must match ``pattern`` (None when absent or empty)."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    if not re.fullmatch(pattern, raw):
        raise ApiError(400, "invalid_query", f"{name} must match {pattern}")
    return raw


def query_choice(request: Request, name: str, choices: tuple[str, ...]) -> str | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    if raw not in choices:
        raise ApiError(400, "invalid_query", f"{name} must be one of {', '.join(choices)}")
    return raw


class Keyed(Protocol):
    """A row pages are cut by: newest first by (created_at, id)."""

    @property
    def created_at(self) -> datetime: ...

    @property
    def id(self) -> uuid.UUID: ...


def encode_cursor(at: datetime, ident: uuid.UUID) -> str:
    """An opaque keyset cursor: (created_at, id) of the last item of a page."""
    raw = f"{at.isoformat()}|{ident}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(value: str | None) -> tuple[datetime, uuid.UUID] | None:
    if not value:
        return None
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
        at, _, ident = raw.partition("|")
        return datetime.fromisoformat(at), uuid.UUID(ident)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ApiError(400, "invalid_cursor", "the cursor is not one this API gave") from None


K = TypeVar("K", bound=Keyed)


def page_of(rows: list[K], limit: int) -> tuple[list[K], str | None]:
    """A page from ``limit + 1`` rows fetched newest first: at most ``limit`` rows, and the
    cursor of the next page when there is one."""
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    return rows, encode_cursor(rows[-1].created_at, rows[-1].id)
