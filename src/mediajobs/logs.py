"""Process-wide logging for every mediajobs process (API, worker, CLI): plain lines for
people or JSON lines for production, the request id of the current request on each line, and
one line per interval about an exhausted system resource instead of one per failed call.

The request id lives in a context variable set by the service's request middleware; outside a
request it reads ``-``."""

from __future__ import annotations

import contextvars
import errno
import json
import logging
import os
import time
from collections.abc import Callable
from typing import Any

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


def quoted(value: str) -> str:
    """``value`` as is when it is a plain token (printable ASCII without a space, ``"`` or
    ``=``), else as a JSON string: a file name with a line break, a tab or ``key=value`` in it
    cannot break or forge a ``key=value`` log line. Letters of any script stay as they are;
    every other character that is not printable (U+0085, U+2028 and U+2029, which some log
    viewers take for line breaks, too) gets JSON's escape: U+2028 is written ``\\u2028``."""
    if value and value.isascii() and value.isprintable() and not any(c in value for c in ' "='):
        return value
    text = json.dumps(value, ensure_ascii=False)
    return "".join(c if c.isprintable() else json.dumps(c)[1:-1] for c in text)


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` to every record (``-`` outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


# Running out of descriptors, buffers or memory: every accept() and connect() fails alike, and
# a log line per attempt would bury everything else (and fill the disk).
EXHAUSTION_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
EXHAUSTION_LOG_EVERY = 10.0  # seconds between log lines about one exhausted resource


# Drivers that wrap the error (psycopg's "could not create socket: Too many open files")
# keep only its text: matched by the C library's message for each errno.
_EXHAUSTION_TEXTS = sorted(
    ((os.strerror(n), n) for n in EXHAUSTION_ERRNOS), key=lambda item: -len(item[0])
)


def _exhaustion_errno(record: logging.LogRecord) -> int | None:
    exc = record.exc_info[1] if record.exc_info else None
    texts = [record.getMessage()]
    seen = 0
    while exc is not None and seen < 10:  # the exception, its cause, its context
        if isinstance(exc, OSError) and exc.errno in EXHAUSTION_ERRNOS:
            return exc.errno
        texts.append(str(exc))
        exc = exc.__cause__ or exc.__context__
        seen += 1
    for text in texts:
        for message, number in _EXHAUSTION_TEXTS:  # longest first: ENFILE's contains EMFILE's
            if message in text:
                return number
    return None


class ExhaustionFilter(logging.Filter):
    """Passes one record about an exhausted system resource (an ``OSError`` EMFILE, ENFILE,
    ENOBUFS or ENOMEM in its exception chain, or that error's C library message in the
    record's or an exception's text) per ``interval`` seconds for each logger and errno; the
    next one that passes says how many were held back. Others pass untouched."""

    def __init__(
        self, interval: float = EXHAUSTION_LOG_EVERY, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self.interval = interval
        self._clock = clock
        self._last: dict[tuple[str, int], float] = {}
        self._held: dict[tuple[str, int], int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        found = _exhaustion_errno(record)
        if found is None:
            return True
        key = (record.name, found)
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._held[key] = self._held.get(key, 0) + 1
            return False
        self._last[key] = now
        held = self._held.pop(key, 0)
        if held and last is not None:
            note = f" [{held} more like this in the last {now - last:.0f} s not logged]"
            record.msg = f"{record.getMessage()}{note}"
            record.args = None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line (production logs)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "requestId": getattr(record, "request_id", "-"),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(level: str, *, json_lines: bool) -> None:
    """Plain lines for people, JSON lines for production; request ids on both."""
    handler = logging.StreamHandler()
    handler.addFilter(ExhaustionFilter())
    handler.addFilter(RequestIdFilter())
    if json_lines:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
