"""The API and a worker in the test's own event loop: `mediajobs dev` without processes.

``in_process_site`` builds the app with ``create_app`` and the worker with the worker's
composition root (``open_worker``), on the test's database (real Postgres), an in-process
Redis (fakeredis) and the memory store, both shared by app and worker as dev mode shares
them. Requests go through ``httpx.ASGITransport``: no socket, no server process, so a route
test costs milliseconds. What needs real processes (signals, restarts, streams through a
real server, the browser) stays in ``tests/acceptance``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx

from mediajobs.cli.worker import open_worker
from mediajobs.config import Settings
from mediajobs.devenv import fake_redis_server
from mediajobs.handlers import build_registry
from mediajobs.queue import WorkerOptions
from mediajobs.service.app import create_app
from mediajobs.storage.factory import stores_for
from tests.support.sse import realtime_env

BASE = "http://mediajobs.test"


@contextlib.asynccontextmanager
async def in_process_site(
    database_url: str, *, worker: bool = True, **extra: str
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the app (and, with ``worker``, a worker draining its jobs) on
    ``database_url``; ``extra`` are environment settings (``MEDIAJOBS_...``)."""
    env = realtime_env(database_url, "", **extra)
    env.pop("REDIS_URL", None)  # fakeredis stands in
    settings = Settings.from_env(env)
    fake_redis = fake_redis_server()
    stores = stores_for(settings)
    app = create_app(settings, fake_redis=fake_redis, stores=stores)
    transport = httpx.ASGITransport(app=app)
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(stores.close)
        await stack.enter_async_context(app.router.lifespan_context(app))
        if worker:
            options = WorkerOptions.from_settings(settings)
            running = await stack.enter_async_context(
                open_worker(settings, build_registry, options, stores=stores, fake_redis=fake_redis)
            )
            task = asyncio.create_task(running.run())

            async def stop_worker() -> None:
                running.stop()
                await task

            stack.push_async_callback(stop_worker)
        client = await stack.enter_async_context(
            httpx.AsyncClient(transport=transport, base_url=BASE, timeout=60)
        )
        yield client
