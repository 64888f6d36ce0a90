"""The access log of ``mediajobs serve``/``dev``: no secret of a query string reaches it."""

from __future__ import annotations

import logging

from mediajobs.config import Settings
from mediajobs.service.server import server_config


def _access_line(path: str) -> str:
    server_config(object(), Settings())
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        "",
        0,
        '%s - "%s %s HTTP/%s" %d',
        ("1.2.3.4:5", "PUT", path, "1.1", 200),
        None,
    )
    assert logging.getLogger("uvicorn.access").filter(record)
    return record.getMessage()


def test_presigned_put_signatures_are_redacted() -> None:
    line = _access_line(
        "/storage/media/u/1/a.jpg?method=PUT&expires=1764000000&maxBytes=10&sig=c2VjcmV0LXNpZw"
    )
    assert "c2VjcmV0LXNpZw" not in line
    assert "sig=REDACTED" in line
    assert "expires=1764000000&maxBytes=10" in line


def test_stream_tickets_stay_redacted() -> None:
    line = _access_line("/events?ticket=abc.def&lastEventId=4")
    assert "abc.def" not in line and "lastEventId=4" in line
