"""``mediajobs worker`` and the worker's composition root.

``open_worker`` opens everything a worker uses (its pool, a Redis client for events, the
handlers' ``WorkerResources``) from ``Settings``, builds the registry with the ``--app``
factory, and closes it all on exit. ``mediajobs dev`` runs the same root in its process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import importlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx

from mediajobs.cli.common import (
    Commands,
    bounded,
    camel,
    database_url,
    handle_signals,
    migrated_database,
    print_json,
)
from mediajobs.config import Settings
from mediajobs.db.pool import open_pool
from mediajobs.devenv import with_dev_secret
from mediajobs.errors import ConfigError
from mediajobs.handlers import WorkerResources
from mediajobs.handlers.imaging_pool import ImagingPool, PoolOptions
from mediajobs.queue import HandlerRegistry, JobQueue, Worker, WorkerOptions, WorkerStats
from mediajobs.realtime import EventRecorder, EventStore, RedisPublisher
from mediajobs.realtime.connect import redis_client
from mediajobs.storage import StoreRegistry
from mediajobs.storage.factory import stores_for

DEFAULT_APP = "mediajobs.handlers:build_registry"
RegistryFactory = Callable[[WorkerResources], HandlerRegistry]


def add_worker(commands: Commands) -> None:
    """The ``worker`` command's parser (``commands``: the subparsers it joins)."""
    worker = commands.add_parser(
        "worker",
        help="claim and run jobs",
        description="Claim and run jobs from the queue at DATABASE_URL until SIGTERM/SIGINT "
        "(with --burst, until the queue is drained); print its counts as JSON when it stops.",
    )
    worker.add_argument(
        "--concurrency",
        type=bounded(int, 1, 1000),
        help="jobs at once, 1..1000 (default MEDIAJOBS_WORKER_CONCURRENCY or 8)",
    )
    worker.add_argument("--kinds", help="comma-separated job kinds (default: all registered)")
    worker.add_argument("--burst", action="store_true", help="exit once the queue is drained")
    worker.add_argument(
        "--app",
        default=DEFAULT_APP,
        help=f"module:callable(WorkerResources) -> HandlerRegistry (default {DEFAULT_APP})",
    )
    worker.set_defaults(handler=cmd_worker)


def load_app(spec: str) -> RegistryFactory:
    """Import ``module:callable``: the worker calls it with its ``WorkerResources``."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError("--app", f"expected module:callable, got {spec!r}")
    try:
        factory: RegistryFactory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError("--app", f"cannot load {spec!r}: {exc}") from exc
    if not callable(factory):
        raise ConfigError("--app", f"{spec!r} is not callable")
    return factory


@contextlib.asynccontextmanager
async def open_worker(
    settings: Settings,
    app: RegistryFactory,
    options: WorkerOptions,
    *,
    stores: StoreRegistry | None = None,
    fake_redis: Any = None,
) -> AsyncIterator[Worker]:
    """The worker's composition root: its own pool, a Redis client for events, the
    handlers' resources (stores, imaging pool, HTTP client) and the registry ``app`` builds
    from them, the queue (which records an event with each transition) and the worker, whose
    maintenance also prunes old events. ``stores``: share the API's (dev mode, where the
    memory store lives in the one process); else the worker opens its own (reaching a
    memory store over HTTP). Everything opened here is closed on exit."""
    url = database_url(settings)
    async with contextlib.AsyncExitStack() as stack:
        pool = await open_pool(
            url, name="queue", min_size=2, max_size=max(4, min(options.concurrency + 2, 20))
        )
        stack.push_async_callback(pool.close)
        redis = redis_client(settings, fake_redis)
        stack.push_async_callback(redis.aclose)
        if stores is None:
            stores = stores_for(settings, remote_memory=True)
            stack.push_async_callback(stores.close)
        imaging = ImagingPool(PoolOptions.from_settings(settings))
        stack.callback(imaging.close)
        http = await stack.enter_async_context(httpx.AsyncClient(timeout=settings.review_timeout))
        recorder = EventRecorder(RedisPublisher(redis, settings.events_channel))
        registry = app(
            WorkerResources(
                settings=settings,
                pool=pool,
                stores=stores,
                imaging=imaging,
                http=http,
                events=recorder,
            )
        )
        if not isinstance(registry, HandlerRegistry):
            raise ConfigError("--app", f"{app!r} did not return a HandlerRegistry")
        stack.push_async_callback(registry.aclose)
        try:
            registry.select(options.kinds)
        except ValueError as exc:
            raise ConfigError("--kinds", str(exc)) from exc
        events = EventStore(pool)

        async def prune_events() -> None:
            await events.prune(settings.event_retention)

        yield Worker.for_postgres(
            JobQueue(pool, hooks=recorder),
            registry,
            conninfo=url,
            options=options,
            maintenance=[prune_events],
        )


async def run_worker(
    settings: Settings, app: RegistryFactory, options: WorkerOptions
) -> WorkerStats:
    """Run a worker until SIGTERM/SIGINT (or, with burst, until the queue is drained)."""
    async with open_worker(settings, app, options) as worker:
        with handle_signals(worker.stop):
            return await worker.run()


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    """Run a worker with the settings' options (``--concurrency`` over
    MEDIAJOBS_WORKER_CONCURRENCY); print its counts as JSON when it stops."""
    settings = with_dev_secret(settings)  # the memory store's signing key derives from it
    app = load_app(args.app)
    kinds = [kind.strip() for kind in args.kinds.split(",")] if args.kinds else None
    options = WorkerOptions.from_settings(settings, kinds=kinds, burst=args.burst)
    if args.concurrency is not None:
        options = dataclasses.replace(options, concurrency=args.concurrency)
    asyncio.run(migrated_database(settings))
    stats = asyncio.run(run_worker(settings, app, options))
    print_json({camel(name): n for name, n in dataclasses.asdict(stats).items()})
    return 0
