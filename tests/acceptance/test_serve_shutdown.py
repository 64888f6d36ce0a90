"""`mediajobs serve` stops in order on SIGTERM: it ends the open event streams itself (an
event stream never ends on its own), so uvicorn's graceful shutdown does not have to wait
out its timeout and cancel them."""

from __future__ import annotations

import httpx
import pytest

from tests.support.serving import Serving
from tests.support.sse import bearer, following, realtime_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


async def test_sigterm_ends_the_open_event_streams_and_the_server_exits_cleanly(
    database_url, redis_url
):
    serving = Serving(realtime_env(database_url, redis_url)).__enter__()
    stopped = False
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            reading = await following(
                client, f"{serving.base}/events", count=1000, headers=bearer("alice")
            )
            serving.__exit__()  # SIGTERM while the stream is open; waits for the exit
            stopped = True
            stream = await reading
    finally:
        if not stopped:
            serving.__exit__()
    assert serving.returncode == 0, serving.output
    assert stream.ended
    assert stream.events == []
    assert "Shutting down" in serving.output
    assert "timeout graceful shutdown exceeded" not in serving.output, serving.output
