"""The service's composition root: the Starlette app and the clients it holds.

The lifespan opens the Postgres pool, the Redis clients and the event hub from ``Settings``
and closes them on shutdown; routes reach them through ``services(request)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp

from mediajobs.config import Environment, Settings
from mediajobs.db.collections import CollectionRepository
from mediajobs.db.media import MediaRepository
from mediajobs.db.policies import SitePolicies
from mediajobs.db.pool import Pool, open_pool
from mediajobs.db.search import SearchRepository
from mediajobs.db.tags import TagRepository
from mediajobs.errors import ConfigError
from mediajobs.queue.queue import JobQueue
from mediajobs.realtime import (
    EventHub,
    EventRecorder,
    EventStore,
    HubOptions,
    RealtimeMetrics,
    RedisPublisher,
    StreamOptions,
)
from mediajobs.realtime.connect import redis_client
from mediajobs.service import collections, events, jobs, media, openapi, policy, search
from mediajobs.service.auth import Authenticator
from mediajobs.service.errors import EXCEPTION_HANDLERS, RETRY_AFTER
from mediajobs.service.metrics import HttpMetrics, QueueGauges
from mediajobs.service.middleware import RequestContext
from mediajobs.service.models import Health, Ready, to_json
from mediajobs.service.server import raise_open_files_limit
from mediajobs.service.state import (
    PublicCache,
    Services,
    StorageCheck,
    StreamSlots,
    services,
)
from mediajobs.service.understanding import SemanticSearch
from mediajobs.storage import MemoryStore, StoreRegistry
from mediajobs.storage.factory import stores_for
from mediajobs.vision.catalog import ModelCatalog

log = logging.getLogger(__name__)

READY_TIMEOUT = 2.0
ENTITY_MEDIA = "/entities/{entity_type}/{entity_id}/media"
POOL_WAIT = 5.0  # seconds a request waits for a database connection before its 503
CLOSE_TIMEOUT = 5.0  # seconds each client may take to close at shutdown


def create_app(
    settings: Settings,
    *,
    fake_redis: Any = None,
    stores: StoreRegistry | None = None,
) -> Starlette:
    """Build the ASGI app; clients are opened by its lifespan. ``stores`` defaults to the
    ones ``settings`` name and ``fake_redis`` (a fakeredis server) stands in for REDIS_URL:
    dev mode passes both, shared with its worker."""
    if not settings.database_url:
        raise ConfigError("DATABASE_URL", "the service needs a database URL")
    database_url = settings.database_url
    owns_stores = stores is None
    registry = stores or stores_for(settings)
    metrics = RealtimeMetrics()
    queue_gauges = QueueGauges(metrics.registry)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        soft, _ = raise_open_files_limit()
        log.info("open files limit: %d (connections and event streams each hold one)", soft)
        pool = await open_pool(
            database_url, name="app", min_size=1, max_size=10, wait_timeout=POOL_WAIT
        )
        redis = redis_client(settings, fake_redis)
        subscriber = redis_client(settings, fake_redis, subscriber=True)
        store = EventStore(pool)
        publisher = RedisPublisher(redis, settings.events_channel, metrics=metrics)
        hub = EventHub(
            store,
            subscriber,
            settings.events_channel,
            metrics=metrics,
            options=HubOptions.from_settings(settings),
        )
        auth = Authenticator.from_settings(settings)
        recorder = EventRecorder(publisher)
        jwks_task = None
        if auth.jwks is not None:
            try:
                await asyncio.to_thread(auth.jwks.refresh)
            except Exception as exc:  # serve anyway: HS256 tokens work, keys come later
                log.warning("JWKS %s not loaded at start: %s", auth.jwks.url, exc)
            jwks_task = asyncio.create_task(auth.jwks.keep_fresh())
        semantic = SemanticSearch(pool, ModelCatalog.from_settings(settings))
        await semantic.start()
        app.state.services = Services(
            settings=settings,
            pool=pool,
            redis=redis,
            queue=JobQueue(pool, hooks=recorder),
            media=MediaRepository(pool),
            policies=SitePolicies(pool),
            collections=CollectionRepository(pool),
            tags=TagRepository(pool),
            search=SearchRepository(pool),
            semantic=semantic,
            stores=registry,
            storage_check=StorageCheck(registry),
            auth=auth,
            events=store,
            recorder=recorder,
            hub=hub,
            metrics=metrics,
            stream_options=StreamOptions.from_settings(settings),
            queue_gauges=queue_gauges,
            stream_slots=StreamSlots(settings.streams_per_user),
            public_cache=PublicCache(ttl=settings.public_max_age),
        )
        try:
            await hub.start()
            yield
        finally:
            if jwks_task is not None:
                jwks_task.cancel()
            await semantic.stop()
            await _bounded("the event hub", hub.stop())
            await _bounded("the Redis subscriber", subscriber.aclose())
            await _bounded("the Redis client", redis.aclose())
            await _bounded("the database pool", pool.close())
            if owns_stores:
                await _bounded("the stores", registry.close())

    routes: list[Route | Mount] = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", events.metrics, methods=["GET"]),
        Route("/events", events.events, methods=["GET"]),
        Route("/events/ticket", events.ticket, methods=["POST"]),
        Route("/jobs/{job_id}/events", events.job_events, methods=["GET"]),
        Route("/media", media.list_media, methods=["GET"]),
        Route("/media/upload/init", media.upload_init, methods=["POST"]),
        Route("/media/upload/complete", media.upload_complete, methods=["POST"]),
        Route("/media/restore", media.restore_media, methods=["POST"]),
        Route("/media/search", search.search_media, methods=["GET"]),
        Route("/media/{media_id}/similar", search.similar_media, methods=["GET"]),
        Route("/media/{media_id}/duplicates", search.duplicates_of_media, methods=["GET"]),
        Route("/media/{media_id}", media.get_media, methods=["GET"]),
        Route("/media/{media_id}", media.patch_media, methods=["PATCH"]),
        Route("/media/{path:path}", media.delete_media, methods=["DELETE"]),
        Route(ENTITY_MEDIA, collections.get_collection, methods=["GET"]),
        Route(ENTITY_MEDIA, collections.put_collection, methods=["PUT"]),
        Route(
            "/public/entities/{entity_type}/{entity_id}",
            collections.public_collection,
            methods=["GET"],
        ),
        Route("/jobs", jobs.list_jobs, methods=["GET"]),
        Route("/jobs/{job_id}", jobs.get_job, methods=["GET"]),
        Route("/jobs/{job_id}/cancel", jobs.cancel_job, methods=["POST"]),
        Route("/jobs/{job_id}/retry", jobs.retry_job, methods=["POST"]),
        Route("/v1/meta/media-rules", policy.media_rules, methods=["GET"]),
        Route("/v1/admin/site-policies", policy.get_site_policy, methods=["GET"]),
        Route("/v1/admin/site-policies", policy.put_site_policy, methods=["PUT"]),
    ]
    if settings.env is not Environment.PRODUCTION:
        routes.append(Route("/dev/token", policy.dev_token, methods=["POST"]))
    routes.append(Route("/openapi.json", openapi.openapi, methods=["GET"]))
    if settings.serve_page:
        routes.append(Route("/", page, methods=["GET"]))
        routes.append(Mount("/static", app=StaticFiles(directory=STATIC)))
    memory = [store for store in registry.stores if isinstance(store, MemoryStore)]
    if memory:
        routes.append(Mount("/storage", app=memory[0].app()))
    middleware: list[Middleware] = []
    if settings.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(settings.cors_origins),
                allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
                allow_headers=[
                    "authorization",
                    "content-type",
                    "last-event-id",
                    "x-request-id",
                    "if-match",
                    "if-none-match",
                ],
                expose_headers=["x-request-id", "etag"],
                max_age=600,
            )
        )
    app = ServiceApp(
        HttpMetrics(metrics.registry),
        routes=routes,
        lifespan=lifespan,
        exception_handlers=EXCEPTION_HANDLERS,
        middleware=middleware,
    )
    app.state.openapi_flags = (
        settings.env is not Environment.PRODUCTION,
        bool(memory),
        settings.serve_page,
    )
    return app


async def _bounded(what: str, closing: Coroutine[Any, Any, None]) -> None:
    """Await ``closing`` for at most ``CLOSE_TIMEOUT`` seconds: a shutdown never hangs on
    one client (a warning names it, and the process exits with it unclosed)."""
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await closing
    except TimeoutError:
        log.warning("shutdown: %s did not close within %g s; exiting anyway", what, CLOSE_TIMEOUT)


class ServiceApp(Starlette):
    """Starlette with ``RequestContext`` outside its ServerErrorMiddleware (Starlette puts
    user middleware inside it), so a 500 carries its request id."""

    def __init__(self, http_metrics: HttpMetrics, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.http_metrics = http_metrics

    def build_middleware_stack(self) -> ASGIApp:
        return RequestContext(super().build_middleware_stack(), metrics=self.http_metrics)


STATIC = Path(__file__).with_name("static")


async def page(request: Request) -> Response:
    """The media library page (a static file; the browser talks to the API)."""
    return FileResponse(STATIC / "index.html", headers={"cache-control": "no-cache"})


def close_streams(app: Starlette) -> None:
    """End every open SSE stream of ``app`` (at shutdown: the server waits for open
    responses, and an event stream never ends by itself)."""
    svc: Services | None = getattr(app.state, "services", None)  # None before startup
    if svc is not None:
        svc.hub.close_all("shutdown")


async def healthz(request: Request) -> JSONResponse:
    """The process is up and serving (liveness)."""
    return JSONResponse(to_json(Health(status="ok")))


async def readyz(request: Request) -> JSONResponse:
    """Every dependency answers (readiness): Postgres, Redis, and the storage bucket is
    reachable and writable (the same check as `mediajobs storage check`)."""
    svc = services(request)
    postgres, redis, storage = await asyncio.gather(
        _check_postgres(svc.pool),
        _check_redis(svc.redis),
        svc.storage_check.report(),
    )
    checks = {
        "postgres": postgres,
        "redis": redis,
        "storage": "ok" if storage.ok else f"error: {storage.error_code}",
    }
    ready = all(value == "ok" for value in checks.values())
    understanding = await svc.semantic.status(within=READY_TIMEOUT)
    body = to_json(
        Ready(
            status="ready" if ready else "unavailable",
            checks=checks,
            understanding=understanding,
        )
    )
    if ready:
        return JSONResponse(body)
    return JSONResponse(body, status_code=503, headers={"Retry-After": str(RETRY_AFTER)})


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
