"""Dependency outages against a real `mediajobs serve` process: while Postgres or Redis is
down the API answers 503 with Retry-After and a stable code (never 500), /readyz names the
dependency, an event stream ends with an error event or status, and the first request after
recovery succeeds. Postgres and Redis here are the test's own, stopped and started."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Iterator

import httpx
import psycopg
import pytest
from httpx_sse import aconnect_sse

from mediajobs.db import migrate
from tests.conftest import free_port
from tests.support.postgres_server import OwnPostgres
from tests.support.redis_server import start_redis_server
from tests.support.serving import Serving
from tests.support.sse import bearer, realtime_env
from tests.support.waiting import wait_for

pytestmark = pytest.mark.timeout(240)

ALICE = bearer("alice")


@pytest.fixture
def own_postgres() -> Iterator[OwnPostgres]:
    server = OwnPostgres()
    try:
        asyncio.run(migrate(server.url))
        yield server
    finally:
        server.close()


def assert_unavailable(response: httpx.Response, code: str) -> None:
    assert response.status_code == 503, (response.request.url, response.text)
    assert response.json() == {
        "error": {"code": code, "message": response.json()["error"]["message"]}
    }
    assert int(response.headers["retry-after"]) > 0
    assert response.headers["x-request-id"]


async def stream_end(client: httpx.AsyncClient, url: str) -> tuple[int, list[tuple[str, str]]]:
    """Status and events of a stream read until the server ends it."""
    events: list[tuple[str, str]] = []
    async with asyncio.timeout(30), aconnect_sse(client, "GET", url, headers=ALICE) as source:
        if source.response.status_code != 200:
            await source.response.aread()
            return source.response.status_code, [("body", source.response.text)]
        async for event in source.aiter_sse():
            if event.data:
                events.append((event.event, event.data))
    return 200, events


async def fill_the_pool(client: httpx.AsyncClient, url: str, size: int) -> None:
    """Make the API's pool open ``size`` connections: ``size`` requests wait together on a
    table lock this test holds, each on its own connection, until it lets go."""
    async with await psycopg.AsyncConnection.connect(url) as locker, locker.transaction():
        await locker.execute("LOCK TABLE media IN ACCESS EXCLUSIVE MODE")
        waiting = [asyncio.create_task(client.get("/media", headers=ALICE)) for _ in range(size)]
        for _ in range(600):
            row = await (
                await locker.execute(
                    "SELECT count(*) FROM pg_locks WHERE relation = 'media'::regclass "
                    "AND NOT granted"
                )
            ).fetchone()
            if row and row[0] >= size:
                break
            await asyncio.sleep(0.05)
        assert row and row[0] >= size
    assert [r.status_code for r in await asyncio.gather(*waiting)] == [200] * size


async def test_a_postgres_outage_answers_503_and_the_first_request_after_it_succeeds(
    own_postgres: OwnPostgres, redis_url: str
) -> None:
    with Serving(realtime_env(own_postgres.url, redis_url)) as serving:
        async with httpx.AsyncClient(base_url=serving.base, timeout=30) as client:
            assert (await client.get("/media", headers=ALICE)).status_code == 200
            init = await client.post(
                "/media/upload/init",
                json={"filename": "a.jpg", "contentType": "image/jpeg", "size": 100},
                headers=ALICE,
            )
            assert init.status_code == 200, init.text
            job = "00000000-0000-0000-0000-000000000001"

            own_postgres.stop()
            during = await asyncio.gather(
                client.get("/media", headers=ALICE),
                client.get("/jobs", headers=ALICE),
                client.post(
                    "/media/upload/complete",
                    json={"objectPath": init.json()["objectPath"]},
                    headers=ALICE,
                ),
                client.get(f"/jobs/{job}/events", headers=ALICE),
            )
            for response in during:
                assert_unavailable(response, "database_unavailable")
            ready = await client.get("/readyz")
            assert ready.status_code == 503 and int(ready.headers["retry-after"]) > 0
            assert ready.json()["status"] == "unavailable"
            checks = ready.json()["checks"]
            assert checks["postgres"].startswith("error") and checks["redis"] == "ok"
            # A stream that must replay history ends with an error event, not a traceback.
            status, events = await stream_end(client, "/events?lastEventId=1")
            assert status == 200
            assert [name for name, _ in events] == ["stream_error"]
            assert json.loads(events[0][1])["code"] == "database_unavailable"

            own_postgres.start()
            after = [(await client.get("/media", headers=ALICE)).status_code for _ in range(10)]
            assert after == [200] * 10
            assert (await client.get("/readyz")).status_code == 200

            # A restart nobody noticed, with a full pool: every idle connection is dead after.
            await fill_the_pool(client, own_postgres.url, 10)
            own_postgres.stop()
            own_postgres.start()
            after = [(await client.get("/media", headers=ALICE)).status_code for _ in range(12)]
            assert after == [200] * 12
    assert "Traceback" not in serving.output, serving.output[-4000:]
    assert "database_unavailable" in serving.output


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs a redis-server binary")
async def test_a_redis_outage_is_named_by_readyz_and_requests_keep_working(
    database_url: str,
) -> None:
    port = free_port()
    redis = start_redis_server(port)
    try:
        env = realtime_env(database_url, f"redis://127.0.0.1:{port}/0")
        with Serving(env) as serving:
            async with httpx.AsyncClient(base_url=serving.base, timeout=30) as client:
                assert (await client.get("/readyz")).status_code == 200
                redis.terminate()
                redis.wait(10)
                ready = await client.get("/readyz")
                assert ready.status_code == 503
                checks = ready.json()["checks"]
                assert checks["redis"].startswith("error") and checks["postgres"] == "ok"
                # Events travel through Postgres meanwhile: the API does not need Redis.
                listed = await client.get("/media", headers=ALICE)
                assert listed.status_code == 200
                redis = start_redis_server(port)

                async def ready() -> bool:
                    return (await client.get("/readyz")).status_code == 200

                await wait_for(ready, timeout=60, interval=0.1)
                assert (await client.get("/readyz")).json()["checks"]["redis"] == "ok"
        assert "Traceback" not in serving.output, serving.output[-4000:]
    finally:
        redis.terminate()
        redis.wait(10)
