"""What the HTTP server process needs beyond uvicorn's defaults.

- A header deadline: uvicorn closes idle keep-alive connections but waits forever for the
  headers of a request (a connection that sends half a request line, or nothing, holds a
  descriptor for good). ``http_protocol(seconds)`` is uvicorn's HTTP protocol with a timer:
  from the moment a connection opens, or the first byte of its next request arrives, the
  request's headers must be complete within ``seconds``, else the server answers 408 and
  closes the connection (as nginx's ``client_header_timeout``, default 60 s, and Apache
  mod_reqtimeout's ``header=20-40``; ours is ``MEDIAJOBS_HEADER_TIMEOUT``, 10 s).
- A header size limit: more than ``MAX_HEADER_BYTES`` of request line and headers is
  answered 431 and the connection closed (uvicorn's httptools parser buffers them without
  limit). The bytes of a request's head are counted before the parser sees them, up to the
  blank line that ends it, however they arrive: in one read with the end of the head (and
  the body), or in many. Bytes the HTTP parser refuses get a 400 in the API's error shape
  (``malformed_request``), with an X-Request-Id like every other answer.
- ``raise_open_files_limit()``: the soft RLIMIT_NOFILE raised to the hard limit at start (the
  soft limit is often 1024: one descriptor per open connection or event stream).
- ``Server`` and ``server_config``: uvicorn as ``mediajobs serve`` and ``dev`` run it (no
  signal handling of its own, the open event streams ended first at shutdown, our logging,
  the header deadline).
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http import HTTPStatus
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from mediajobs.config import Settings
from mediajobs.service.auth import RedactTickets

log = logging.getLogger(__name__)

MAX_HEADER_BYTES = 64 * 1024  # a request line and headers (nginx allows 4 x 8 KiB by default)


def _head_end(buffer: bytes) -> int:
    """The index just past the blank line that ends a request's head in ``buffer`` (lines end
    in CRLF, or a bare LF as parsers accept), or -1 when it has not come yet."""
    ends = [
        found + len(blank) for blank in (b"\n\r\n", b"\n\n") if (found := buffer.find(blank)) >= 0
    ]
    return min(ends, default=-1)


def raw_error(status: int, code: str, message: str) -> bytes:
    """A whole HTTP/1.1 error response in the API's error shape, with a fresh X-Request-Id,
    for answers the server sends before any request reaches the app (the connection is
    closed after it)."""
    body = json.dumps({"error": {"code": code, "message": message}}, separators=(",", ":")).encode()
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
        "content-type: application/json\r\n"
        f"x-request-id: {uuid.uuid4().hex}\r\n"
        "connection: close\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    )
    return head.encode("ascii") + body


class _HeaderDeadline:
    """The header timer of one connection (``protocol`` is a uvicorn HTTP protocol)."""

    def __init__(self, protocol: Any, seconds: float) -> None:
        self._protocol = protocol
        self._seconds = seconds
        self._timer: asyncio.TimerHandle | None = None
        self._header_bytes = 0  # of this request's head, received so far
        self._tail = b""  # the head's last bytes: its end may span two reads

    def _waiting_for_headers(self) -> bool:
        # uvicorn makes a request's cycle once its headers are parsed.
        cycle = self._protocol.cycle
        return cycle is None or bool(cycle.response_complete)

    def arm(self) -> None:
        if self._timer is None and self._waiting_for_headers():
            self._timer = self._protocol.loop.call_later(self._seconds, self._expire)

    def admit(self, data: bytes) -> bool:
        """Before the parser sees ``data``: count the bytes of the awaited request's head in
        it (up to the blank line that ends it); over ``MAX_HEADER_BYTES``, answer 431 and
        return False (the parser must not see them)."""
        if not self._waiting_for_headers():
            return True
        if self._header_bytes == 0:
            data = data.lstrip(b"\r\n")  # blank lines before a request line are ignored
        seen = self._tail + data
        end = _head_end(seen)
        size = self._header_bytes + (len(data) if end < 0 else end - len(self._tail))
        if size > MAX_HEADER_BYTES:
            self._answer(
                raw_error(
                    431,
                    "headers_too_large",
                    f"a request line and headers are limited to {MAX_HEADER_BYTES} bytes",
                )
            )
            return False
        if end < 0:
            self._header_bytes, self._tail = size, seen[-2:]
        else:  # the head is complete: the next request's count starts afresh
            self._header_bytes, self._tail = 0, b""
        return True

    def settle(self) -> None:
        """After the parser has seen new bytes: the headers are complete (or a new request
        began), or they are still coming (the timer runs)."""
        if self._protocol.transport.is_closing() or not self._waiting_for_headers():
            self._header_bytes, self._tail = 0, b""
            self.cancel()
            return
        self.arm()

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        if self._waiting_for_headers():
            self._answer(raw_error(408, "request_timeout", "the request headers timed out"))

    def _answer(self, response: bytes) -> None:
        """Send ``response`` and close the connection (once)."""
        self.cancel()
        transport = self._protocol.transport
        if not transport.is_closing():
            transport.write(response)
            transport.close()


class _HeaderTimeoutMixin:
    """Arms the header deadline on a uvicorn HTTP protocol (mixed in before it)."""

    header_timeout = 10.0
    _deadline: _HeaderDeadline

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._deadline = _HeaderDeadline(self, self.header_timeout)
        self._deadline.arm()

    def data_received(self, data: bytes) -> None:
        if not self._deadline.admit(data):
            return
        super().data_received(data)  # type: ignore[misc]
        self._deadline.settle()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to bytes its parser refuses, in the API's error shape with an
        X-Request-Id (uvicorn's own is plain text without one)."""
        self._deadline._answer(raw_error(400, "malformed_request", msg))

    def connection_lost(self, exc: Exception | None) -> None:
        self._deadline.cancel()
        super().connection_lost(exc)  # type: ignore[misc]


class H11HeaderTimeout(_HeaderTimeoutMixin, H11Protocol):
    """uvicorn's h11 protocol with a header deadline of ``header_timeout`` seconds. Its
    parser holds a head of up to ``MAX_HEADER_BYTES`` (h11's own limit, 16 KiB, would answer
    a smaller head 400): the header size limit is the deadline's."""

    def __init__(self, config: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        if config.h11_max_incomplete_event_size is None:
            self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=2 * MAX_HEADER_BYTES)


def _httptools_class() -> type[asyncio.Protocol] | None:
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # uvicorn without its [standard] extra
        return None

    class HttpToolsHeaderTimeout(_HeaderTimeoutMixin, HttpToolsProtocol):
        """uvicorn's httptools protocol with a header deadline."""

    return HttpToolsHeaderTimeout


def http_protocol(header_timeout: float, *, kind: str = "auto") -> type[asyncio.Protocol]:
    """The HTTP protocol class for ``uvicorn.Config(http=...)``: httptools when installed
    (``kind="auto"``, as uvicorn picks), else h11; either with the header deadline."""
    base: type[asyncio.Protocol] | None = None
    if kind in ("auto", "httptools"):
        base = _httptools_class()
        if base is None and kind == "httptools":
            raise RuntimeError("httptools is not installed")
    if base is None:
        base = H11HeaderTimeout
    return type(base.__name__, (base,), {"header_timeout": header_timeout})


def raise_open_files_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit; returns (soft, hard) after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open files limit from %d to %d: %s", soft, hard, exc)
    return soft, hard


class Server(uvicorn.Server):
    """uvicorn without its own signal handling: the caller stops it (and the worker). At
    shutdown it calls ``on_shutdown`` first (which ends the SSE streams: uvicorn waits for
    open responses to finish, and an event stream never ends by itself)."""

    def __init__(self, config: uvicorn.Config, *, on_shutdown: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_shutdown = on_shutdown

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        """No signal handlers: the command installs its own and calls ``stop``."""
        yield

    async def shutdown(self, sockets: list[Any] | None = None) -> None:
        """End the event streams, then shut down as uvicorn does."""
        self._on_shutdown()
        await super().shutdown(sockets)

    def stop(self) -> None:
        """Begin a graceful shutdown; a second call forces it."""
        if self.should_exit:
            self.force_exit = True
        self.should_exit = True


def server_config(app: Any, settings: Settings) -> uvicorn.Config:
    """uvicorn's configuration for ``app`` on ``settings``' host and port."""
    # Stream tickets travel in query strings: keep them out of the access log.
    logging.getLogger("uvicorn.access").addFilter(RedactTickets())
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        log_config=None,  # our handlers: request ids, JSON lines in production
        lifespan="on",
        proxy_headers=True,
        timeout_graceful_shutdown=10,
        http=http_protocol(settings.header_timeout),  # closes requests stuck in their headers
    )
