"""The service's composition root: the Starlette app and the clients it holds.

The lifespan opens the Postgres pool and the Redis client from ``Settings`` and closes them
on shutdown; routes reach them through ``request.app.state.services``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from mediajobs.config import Environment, Settings
from mediajobs.db.pool import Pool, open_pool
from mediajobs.errors import ConfigError
from mediajobs.queue.queue import JobQueue
from mediajobs.service.errors import EXCEPTION_HANDLERS

log = logging.getLogger(__name__)

READY_TIMEOUT = 2.0


@dataclass
class Services:
    """Long-lived clients of one API process."""

    settings: Settings
    pool: Pool
    redis: Redis
    queue: JobQueue


RedisFactory = Callable[[], Redis]


def redis_client(settings: Settings, fake_server: Any = None) -> Redis:
    """The Redis client for ``settings``: REDIS_URL, else an in-process fakeredis server
    (development and tests only; production requires REDIS_URL)."""
    if settings.redis_url:
        return Redis.from_url(settings.redis_url)
    if settings.env is Environment.PRODUCTION:
        raise ConfigError("REDIS_URL", "is required when MEDIAJOBS_ENV=production")
    import fakeredis

    client: Redis = fakeredis.FakeAsyncRedis(server=fake_server or fakeredis.FakeServer())
    return client


def create_app(settings: Settings, *, redis_factory: RedisFactory | None = None) -> Starlette:
    """Build the ASGI app; clients are opened by its lifespan."""
    if not settings.database_url:
        raise ConfigError("DATABASE_URL", "the service needs a database URL")
    database_url = settings.database_url

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        pool = await open_pool(database_url, name="app", min_size=1, max_size=10)
        redis = redis_factory() if redis_factory else redis_client(settings)
        app.state.services = Services(settings, pool, redis, JobQueue(pool))
        try:
            yield
        finally:
            await redis.aclose()
            await pool.close()

    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan, exception_handlers=EXCEPTION_HANDLERS)


async def healthz(request: Request) -> JSONResponse:
    """The process is up and serving (liveness)."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> JSONResponse:
    """Every dependency answers (readiness): Postgres and Redis."""
    services: Services = request.app.state.services
    checks = dict(
        zip(
            ("postgres", "redis"),
            await asyncio.gather(_check_postgres(services.pool), _check_redis(services.redis)),
            strict=True,
        )
    )
    ready = all(value == "ok" for value in checks.values())
    body = {"status": "ready" if ready else "unavailable", "checks": checks}
    return JSONResponse(body, status_code=200 if ready else 503)


async def _check_postgres(pool: Pool) -> str:
    try:
        async with asyncio.timeout(READY_TIMEOUT), pool.connection() as conn:
            await conn.execute("SELECT 1")
    except Exception as exc:
        return f"error: {type(exc).__name__}"
    return "ok"


async def _check_redis(redis: Redis) -> str:
    try:
        async with asyncio.timeout(READY_TIMEOUT):
            await redis.ping()
    except Exception as exc:
        return f"error: {type(exc).__name__}"
    return "ok"
