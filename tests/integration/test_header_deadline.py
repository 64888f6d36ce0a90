"""The header deadline of both uvicorn HTTP protocols (httptools and h11), on a real socket:
a request whose headers stop coming gets 408 and its connection is closed; whole requests,
kept-alive connections and slow bodies are not affected."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from mediajobs.service.server import http_protocol
from tests.conftest import free_port

pytestmark = pytest.mark.timeout(60)


async def echo(request: Request) -> PlainTextResponse:
    return PlainTextResponse(f"got {len(await request.body())}")


@contextlib.asynccontextmanager
async def server(kind: str) -> AsyncIterator[int]:
    port = free_port()
    config = uvicorn.Config(
        Starlette(routes=[Route("/", echo, methods=["GET", "POST"])]),
        port=port,
        http=http_protocol(0.5, kind=kind),
        log_config=None,
        lifespan="off",
    )
    serving = uvicorn.Server(config)
    task = asyncio.create_task(serving.serve())
    for _ in range(1000):  # uvicorn offers no startup event: poll its flag
        if serving.started:
            break
        await asyncio.sleep(0.01)
    assert serving.started
    try:
        yield port
    finally:
        serving.should_exit = True
        await task


async def until_closed(reader: asyncio.StreamReader) -> bytes:
    async with asyncio.timeout(20):  # the server closes it long before
        return await reader.read()


@pytest.mark.parametrize("kind", ["httptools", "h11"])
async def test_stuck_headers_get_408_and_whole_requests_are_served(kind: str) -> None:
    async with server(kind) as port:
        # A whole request whose body comes slower than the deadline is served: the deadline
        # is for headers only. It connects first, so once the two connections opened after
        # it have had their 408, its own deadline has passed too: then its body comes.
        slow_reader, slow = await asyncio.open_connection("127.0.0.1", port)
        slow.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nConnection: close\r\n\r\n")
        half_reader, half = await asyncio.open_connection("127.0.0.1", port)
        half.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Len")
        silent_reader, silent = await asyncio.open_connection("127.0.0.1", port)
        half_got, silent_got = await asyncio.gather(
            until_closed(half_reader), until_closed(silent_reader)
        )
        slow.write(b"abcd")
        slow_got = await until_closed(slow_reader)
        for writer in (half, silent, slow):
            writer.close()
    assert half_got.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert b'"code":"request_timeout"' in half_got
    assert silent_got.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert slow_got.startswith(b"HTTP/1.1 200") and slow_got.endswith(b"got 4")


async def _send(port: int, *parts: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for part in parts:
            writer.write(part)
            await writer.drain()
            await asyncio.sleep(0.05)
        return await until_closed(reader)
    except ConnectionResetError:  # closed while the rest was still being sent
        return await reader.read()
    finally:
        writer.close()


def _big_header(size: int) -> bytes:
    return b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * size + b"\r\nConnection: close\r\n\r\n"


@pytest.mark.parametrize("kind", ["httptools", "h11"])
async def test_a_head_over_the_limit_gets_431_however_it_arrives(kind: str) -> None:
    big = _big_header(70_000)
    line = b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    async with server(kind) as port:
        answers = {
            "one write": await _send(port, big),
            "two writes": await _send(port, big[:35_000], big[35_000:]),
            "100 KB header": await _send(port, _big_header(100_000)),
            "100 KB request line": await _send(port, line),
            "with a body": await _send(
                port,
                big.replace(b"GET", b"POST").replace(
                    b"\r\n\r\n", b"\r\nContent-Length: 2\r\n\r\nab"
                ),
            ),
        }
        # Under the limit, in one write with its end, a head is served.
        fits = await _send(port, _big_header(60_000))
    for how, got in answers.items():
        assert got.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"), (how, got[:80])
        assert b"\r\nx-request-id: " in got, how
        assert got.endswith(
            b'{"error":{"code":"headers_too_large","message":'
            b'"a request line and headers are limited to 65536 bytes"}}'
        ), how
    assert fits.startswith(b"HTTP/1.1 200"), fits[:80]
