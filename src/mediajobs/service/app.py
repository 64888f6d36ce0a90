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
from starlette.routing import Mount, Route

from mediajobs.config import Environment, Settings
from mediajobs.db.pool import Pool, open_pool
from mediajobs.errors import ConfigError
from mediajobs.queue.queue import JobQueue
from mediajobs.service.errors import EXCEPTION_HANDLERS
from mediajobs.storage import CheckReport, MemoryStore, StoreRegistry, check_store, open_stores

log = logging.getLogger(__name__)

READY_TIMEOUT = 2.0
STORAGE_CHECK_TIMEOUT = 10.0
STORAGE_CHECK_EVERY = 30.0  # seconds a storage check result is reused by /readyz


@dataclass
class Services:
    """Long-lived clients of one API process."""

    settings: Settings
    pool: Pool
    redis: Redis
    queue: JobQueue
    stores: StoreRegistry
    storage_check: StorageCheck


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


class StorageCheck:
    """The storage check of `mediajobs storage check`, rerun by /readyz at most every
    STORAGE_CHECK_EVERY seconds (it writes, reads and deletes a probe object)."""

    def __init__(self, stores: StoreRegistry) -> None:
        self._stores = stores
        self._last: CheckReport | None = None
        self._at = 0.0
        self._lock = asyncio.Lock()

    async def report(self) -> CheckReport:
        async with self._lock:
            now = asyncio.get_running_loop().time()
            if self._last is None or now - self._at >= STORAGE_CHECK_EVERY:
                try:
                    async with asyncio.timeout(STORAGE_CHECK_TIMEOUT):
                        self._last = await check_store(self._stores.active)
                except TimeoutError:
                    active = self._stores.active
                    self._last = CheckReport(
                        active.provider, active.bucket, error="timed out", error_code="timeout"
                    )
                self._at = now
            return self._last


def memory_base_url(settings: Settings) -> str:
    """Where the service serves the memory store: this process's /storage."""
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    return f"http://{host}:{settings.port}/storage"


def create_app(
    settings: Settings,
    *,
    redis_factory: RedisFactory | None = None,
    stores: StoreRegistry | None = None,
) -> Starlette:
    """Build the ASGI app; clients are opened by its lifespan. ``stores`` defaults to the
    ones ``settings`` name (dev mode passes its own, shared with the worker)."""
    if not settings.database_url:
        raise ConfigError("DATABASE_URL", "the service needs a database URL")
    database_url = settings.database_url
    owns_stores = stores is None
    registry = stores or open_stores(settings.storage, memory_base_url=memory_base_url(settings))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        pool = await open_pool(database_url, name="app", min_size=1, max_size=10)
        redis = redis_factory() if redis_factory else redis_client(settings)
        app.state.services = Services(
            settings, pool, redis, JobQueue(pool), registry, StorageCheck(registry)
        )
        try:
            yield
        finally:
            await redis.aclose()
            await pool.close()
            if owns_stores:
                await registry.close()

    routes: list[Route | Mount] = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
    ]
    memory = [store for store in registry.stores if isinstance(store, MemoryStore)]
    if memory:
        routes.append(Mount("/storage", app=memory[0].app()))
    return Starlette(routes=routes, lifespan=lifespan, exception_handlers=EXCEPTION_HANDLERS)


async def healthz(request: Request) -> JSONResponse:
    """The process is up and serving (liveness)."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> JSONResponse:
    """Every dependency answers (readiness): Postgres, Redis, and the storage bucket is
    reachable and writable (the same check as `mediajobs storage check`)."""
    services: Services = request.app.state.services
    postgres, redis, storage = await asyncio.gather(
        _check_postgres(services.pool),
        _check_redis(services.redis),
        services.storage_check.report(),
    )
    checks = {
        "postgres": postgres,
        "redis": redis,
        "storage": "ok" if storage.ok else f"error: {storage.error_code}",
    }
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
