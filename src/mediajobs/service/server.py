"""What the HTTP server process needs beyond uvicorn's defaults.

- A header deadline: uvicorn closes idle keep-alive connections but waits forever for the
  headers of a request (a connection that sends half a request line, or nothing, holds a
  descriptor for good). ``http_protocol(seconds)`` is uvicorn's HTTP protocol with a timer:
  from the moment a connection opens, or the first byte of its next request arrives, the
  request's headers must be complete within ``seconds``, else the server answers 408 and
  closes the connection (as nginx's ``client_header_timeout``, default 60 s, and Apache
  mod_reqtimeout's ``header=20-40``; ours is ``MEDIAJOBS_HEADER_TIMEOUT``, 10 s).
- ``raise_open_files_limit()``: the soft RLIMIT_NOFILE raised to the hard limit at start (the
  soft limit is often 1024: one descriptor per open connection or event stream).
"""

from __future__ import annotations

import asyncio
import logging
import resource
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)

_TIMEOUT_BODY = b'{"error":{"code":"request_timeout","message":"the request headers timed out"}}'
_TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
    + f"content-length: {len(_TIMEOUT_BODY)}\r\n\r\n".encode()
    + _TIMEOUT_BODY
)


class _HeaderDeadline:
    """The header timer of one connection (``protocol`` is a uvicorn HTTP protocol)."""

    def __init__(self, protocol: Any, seconds: float) -> None:
        self._protocol = protocol
        self._seconds = seconds
        self._timer: asyncio.TimerHandle | None = None

    def _waiting_for_headers(self) -> bool:
        # uvicorn makes a request's cycle once its headers are parsed.
        cycle = self._protocol.cycle
        return cycle is None or bool(cycle.response_complete)

    def arm(self) -> None:
        if self._timer is None and self._waiting_for_headers():
            self._timer = self._protocol.loop.call_later(self._seconds, self._expire)

    def settle(self) -> None:
        """After parsing new data: the headers are complete, or a new request began."""
        if self._waiting_for_headers():
            self.arm()
        else:
            self.cancel()

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        transport = self._protocol.transport
        if transport.is_closing() or not self._waiting_for_headers():
            return
        transport.write(_TIMEOUT_RESPONSE)
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
        super().data_received(data)  # type: ignore[misc]
        self._deadline.settle()

    def connection_lost(self, exc: Exception | None) -> None:
        self._deadline.cancel()
        super().connection_lost(exc)  # type: ignore[misc]


class H11HeaderTimeout(_HeaderTimeoutMixin, H11Protocol):
    """uvicorn's h11 protocol with a header deadline of ``header_timeout`` seconds."""


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
