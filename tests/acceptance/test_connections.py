"""Connections and streams against a real `mediajobs serve` process: requests stuck in their
headers are answered 408 and closed, one user's event streams are capped, the soft open
files limit is raised at start, and running out of descriptors is logged once per interval
while the server keeps serving."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from mediajobs.service.server import MAX_HEADER_BYTES
from tests.support.serving import Serving
from tests.support.sse import bearer, following, realtime_env
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(180)

ALICE, BOB = bearer("alice"), bearer("bob")


@pytest.fixture
def env(database_url: str, redis_url: str) -> dict[str, str]:
    return realtime_env(database_url, redis_url)


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (raises on a 30 s
    silence: the server never closed it)."""
    sock.settimeout(30)
    received = b""
    while chunk := sock.recv(4096):
        received += chunk
    return received


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def test_requests_that_never_finish_their_headers_get_408_and_are_closed(
    env: dict[str, str],
) -> None:
    with Serving({**env, "MEDIAJOBS_HEADER_TIMEOUT": "1"}) as serving:
        silent = connect(serving.port)
        half = connect(serving.port)
        half.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        trickle = connect(serving.port)
        trickle.sendall(b"GET /heal")
        # A kept-alive connection: one whole request, then half of the next one.
        kept = connect(serving.port)
        kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        first = b""
        while not first.endswith(b'{"status":"ok"}'):
            first += kept.recv(4096)
        assert first.startswith(b"HTTP/1.1 200"), first
        kept.sendall(b"GET /healthz HTTP/1.1\r\n")
        answers = {
            name: read_until_closed(sock)
            for name, sock in [("silent", silent), ("half", half), ("trickle", trickle)]
        }
        kept_rest = read_until_closed(kept)
        # A request whose headers come in time is served as always.
        whole = httpx.get(f"{serving.base}/healthz", timeout=10)
    for name, received in {**answers, "kept": kept_rest}.items():
        assert received.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), (name, received)
        assert received.endswith(
            b'"code":"request_timeout","message":"the request headers timed out"}}'
        )
    assert whole.status_code == 200
    for sock in (silent, half, trickle, kept):
        sock.close()


async def test_one_user_can_hold_only_the_configured_number_of_event_streams(
    env: dict[str, str],
) -> None:
    with Serving({**env, "MEDIAJOBS_STREAMS_PER_USER": "3"}) as serving:
        async with httpx.AsyncClient(base_url=serving.base, timeout=30) as client:
            mine = [await following(client, "/events", headers=ALICE) for _ in range(3)]
            refused = await client.get("/events", headers=ALICE)
            assert refused.status_code == 429
            assert refused.json()["error"]["code"] == "too_many_streams"
            assert int(refused.headers["retry-after"]) > 0
            job_stream = await client.get(
                "/jobs/00000000-0000-0000-0000-000000000001/events", headers=ALICE
            )
            assert job_stream.status_code == 404  # the job check comes first: no such job
            other = await following(client, "/events", headers=BOB)  # another user: own cap
            # Closing one of alice's streams gives its slot back.
            mine[0].cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await mine[0]
            for _ in range(200):
                status = await open_status(client, "/events", ALICE)
                if status == 200:
                    break
                await asyncio.sleep(0.05)
            assert status == 200
            for task in [*mine[1:], other]:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


async def open_status(client: httpx.AsyncClient, url: str, headers: dict[str, str]) -> int:
    """The status a stream opens with (the stream is closed right after)."""
    async with client.stream("GET", url, headers=headers) as response:
        return response.status_code


def soft_open_files_limit(pid: int) -> int:
    with open(f"/proc/{pid}/limits") as limits:
        for line in limits:
            if line.startswith("Max open files"):
                return int(line.split()[3])
    raise AssertionError("no open files line")


def test_the_soft_open_files_limit_is_raised_to_the_hard_one_at_start(
    env: dict[str, str],
) -> None:
    with Serving(env, open_files=(256, 4096)) as serving:
        assert soft_open_files_limit(serving.pid) == 4096
        assert "open files limit: 4096" in serving.log_so_far()


@contextlib.contextmanager
def many_connections(port: int, count: int) -> Iterator[list[socket.socket]]:
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            with contextlib.suppress(OSError):
                socks.append(connect(port))
        yield socks
    finally:
        for sock in socks:
            sock.close()


def test_running_out_of_descriptors_is_logged_once_per_interval_and_the_server_recovers(
    env: dict[str, str],
) -> None:
    limits = (96, 96)  # a few dozen descriptors for connections
    with Serving({**env, "MEDIAJOBS_HEADER_TIMEOUT": "60"}, open_files=limits) as serving:
        started = time.monotonic()
        with many_connections(serving.port, 200):
            # While every descriptor is taken the server keeps failing to accept: once it
            # has said so, it goes on failing for 4 s more, which it must not log again.
            wait_until(lambda: exhaustion_records(serving.log_so_far()), timeout=60, interval=0.2)
            time.sleep(4)
            during = serving.log_so_far()
        elapsed = time.monotonic() - started
        assert httpx.get(f"{serving.base}/healthz", timeout=10).status_code == 200
    by_logger = exhaustion_records(during)
    assert by_logger.get("asyncio"), during[-3000:]  # accept() did run out, and said so
    # At most one record per logger per 10 s interval (the first one included).
    for logger, count in by_logger.items():
        assert count <= 1 + int(elapsed // 10) + 1, (logger, count, during[-3000:])


def exhaustion_records(output: str) -> dict[str, int]:
    """Log records (a header line and its traceback) that report running out of
    descriptors, counted by logger."""
    records = re.split(r"\n(?=\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ )", output)
    counts: dict[str, int] = {}
    for record in records:
        if re.search(r"Too many open files|EMFILE", record):
            logger = record.split()[3]
            counts[logger] = counts.get(logger, 0) + 1
    return counts


def test_oversized_and_malformed_requests_get_the_error_shape_with_a_request_id(
    env: dict[str, str],
) -> None:
    with Serving(env) as serving:
        # One byte over the limit, never ending the header: the server has read every byte
        # when it answers, so its close is a clean one (bytes still in flight to a closed
        # socket would reset the connection and lose the answer).
        head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: "
        with connect(serving.port) as huge:
            huge.sendall(head + b"a" * (MAX_HEADER_BYTES + 1 - len(head)))
            answers = {"huge": read_until_closed(huge)}
        for name, raw in {
            "request line": b"NOT A REQUEST\r\n\r\n",
            "NUL in a header": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
            "negative length": b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        }.items():
            sock = connect(serving.port)
            sock.sendall(raw)
            answers[name] = read_until_closed(sock)
            sock.close()
        assert httpx.get(f"{serving.base}/healthz", timeout=10).status_code == 200
    for name, received in answers.items():
        head, _, body = received.partition(b"\r\n\r\n")
        status = 431 if name == "huge" else 400
        assert head.startswith(f"HTTP/1.1 {status} ".encode()), (name, received[:300])
        assert re.search(rb"(?im)^x-request-id: [0-9a-f]{32}\r?$", head), (name, head)
        code = json.loads(body)["error"]["code"]
        assert code == ("headers_too_large" if name == "huge" else "malformed_request"), name


def requests_counted(base: str, route: str) -> float:
    """Requests to ``route`` that ``/metrics`` has counted, whatever their status."""
    metrics = httpx.get(f"{base}/metrics", timeout=10).text
    prefix = "mediajobs_http_requests_total{"
    return sum(
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith(prefix) and f'route="{route}"' in line
    )


def test_a_client_that_leaves_mid_body_is_no_server_error(env: dict[str, str]) -> None:
    with Serving(env) as serving:
        for _ in range(3):
            sock = connect(serving.port)
            sock.sendall(
                b"POST /media/upload/init HTTP/1.1\r\nHost: x\r\n"
                b"Authorization: " + ALICE["Authorization"].encode() + b"\r\n"
                b'Content-Type: application/json\r\nContent-Length: 50\r\n\r\n{"filename"'
            )
            time.sleep(0.2)  # the server is reading the body when the client leaves
            sock.close()
        wait_until(lambda: requests_counted(serving.base, "/media/upload/init") >= 3, timeout=30)
        metrics = httpx.get(f"{serving.base}/metrics", timeout=10).text
        log = serving.log_so_far()
    init = [line for line in metrics.splitlines() if 'route="/media/upload/init"' in line]
    assert any('status="499"' in line for line in init), init
    assert not any('status="5' in line for line in init), init
    assert "unhandled error" not in log and "Traceback" not in log, log[-3000:]
