"""Keyset pages: newest first by ``(created_at, id)``, with an opaque cursor."""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import datetime
from typing import Protocol, TypeVar

from mediajobs.service.errors import ApiError


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
    """The ``(created_at, id)`` a cursor holds; None for no cursor; 400 ``invalid_cursor``
    for one this API did not give."""
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


def encode_offset(offset: int) -> str:
    """An opaque cursor of a ranked result list (search, similar, duplicates): the rank of
    the next page's first row."""
    return base64.urlsafe_b64encode(f"o:{offset}".encode()).decode().rstrip("=")


def decode_offset(value: str | None, *, maximum: int) -> int:
    """The offset a ranked list's cursor holds (0 for none); 400 ``invalid_cursor`` for one
    this API did not give or one past ``maximum``."""
    if not value:
        return 0
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
        kind, _, number = raw.partition(":")
        offset = int(number)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        offset, kind = -1, ""
    if kind != "o" or not 0 <= offset <= maximum:
        raise ApiError(400, "invalid_cursor", "the cursor is not one this API gave")
    return offset
