"""``mediajobs``: the command line.

mediajobs dev          API + worker in one process, embedded services when unset
mediajobs serve        the HTTP API
mediajobs worker       a worker: claims and runs jobs
mediajobs migrate      apply database migrations (idempotent, safe to run concurrently)
mediajobs config       print the effective configuration (no secrets)
mediajobs jobs ...     ping | show ID | cancel ID | stats | enqueue KIND
mediajobs token USER   print a bearer token for USER (--admin, --ttl)
mediajobs events prune delete events older than MEDIAJOBS_EVENT_RETENTION
mediajobs storage check  probe the bucket: write, read, list, sign, delete
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import importlib
import json
import logging
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

import uvicorn
from starlette.applications import Starlette

from mediajobs.config import Environment, Settings, parse_duration
from mediajobs.db.migrate import migrate
from mediajobs.db.policies import PolicyInvalid, SitePolicies, SitePolicy
from mediajobs.db.pool import open_pool
from mediajobs.devenv import with_dev_secret
from mediajobs.errors import ConfigError, DatabaseError, StorageError
from mediajobs.handlers import PING_KIND, build_registry
from mediajobs.queue import HandlerRegistry, JobQueue, JobSpec, Worker, WorkerOptions, WorkerStats
from mediajobs.realtime import EventRecorder, EventStore, RedisPublisher
from mediajobs.realtime.connect import redis_client
from mediajobs.service.app import close_streams, create_app
from mediajobs.service.auth import Authenticator, RedactTickets
from mediajobs.service.middleware import configure_logging
from mediajobs.service.server import http_protocol
from mediajobs.storage import check_store, stores_for

log = logging.getLogger("mediajobs")

DEFAULT_APP = "mediajobs.handlers:build_registry"
RegistryFactory = Callable[[Settings], HandlerRegistry]


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
        configure_logging(settings.log_level, json_lines=settings.log_format == "json")
        handler: Callable[[argparse.Namespace, Settings], int] = args.handler
        return handler(args, settings)
    except ConfigError as exc:
        print(f"mediajobs: configuration error: {exc}", file=sys.stderr)
        return 2
    except DatabaseError as exc:
        print(f"mediajobs: {exc}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mediajobs", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)

    dev = commands.add_parser("dev", help="API + worker in one process (embedded services)")
    _add_listen(dev)
    dev.set_defaults(handler=cmd_dev)

    serve = commands.add_parser("serve", help="run the HTTP API")
    _add_listen(serve)
    serve.set_defaults(handler=cmd_serve)

    worker = commands.add_parser("worker", help="claim and run jobs")
    worker.add_argument("--concurrency", type=int, help="jobs at once (default from env)")
    worker.add_argument("--kinds", help="comma-separated job kinds (default: all registered)")
    worker.add_argument("--burst", action="store_true", help="exit once the queue is drained")
    worker.add_argument(
        "--app",
        default=DEFAULT_APP,
        help=f"module:callable(settings) -> HandlerRegistry (default {DEFAULT_APP})",
    )
    worker.set_defaults(handler=cmd_worker)

    commands.add_parser("migrate", help="apply database migrations").set_defaults(
        handler=cmd_migrate
    )
    commands.add_parser("config", help="print the effective configuration").set_defaults(
        handler=cmd_config
    )

    jobs = commands.add_parser("jobs", help="inspect and operate on jobs")
    jobs_commands = jobs.add_subparsers(dest="jobs_command", required=True)
    ping = jobs_commands.add_parser("ping", help="enqueue system.ping and wait for a worker")
    ping.add_argument("--timeout", type=float, default=10.0)
    ping.set_defaults(handler=cmd_jobs_ping)
    show = jobs_commands.add_parser("show", help="print one job as JSON")
    show.add_argument("job_id", type=uuid.UUID)
    show.set_defaults(handler=cmd_jobs_show)
    cancel = jobs_commands.add_parser("cancel", help="cancel a queued or running job")
    cancel.add_argument("job_id", type=uuid.UUID)
    cancel.set_defaults(handler=cmd_jobs_cancel)
    jobs_commands.add_parser("stats", help="jobs by state, oldest wait").set_defaults(
        handler=cmd_jobs_stats
    )
    enqueue = jobs_commands.add_parser("enqueue", help="enqueue one job")
    enqueue.add_argument("kind")
    enqueue.add_argument("--owner", default="operator")
    enqueue.add_argument("--payload", default="{}", help="JSON object")
    enqueue.add_argument("--delay", type=float, default=0.0)
    enqueue.add_argument("--max-attempts", type=int, default=5)
    enqueue.set_defaults(handler=cmd_jobs_enqueue)

    token = commands.add_parser("token", help="print a bearer token for a user")
    token.add_argument("user", help="the user id (the token's sub)")
    token.add_argument("--admin", action="store_true", help="grant the admin role")
    token.add_argument("--ttl", default="12h", help="lifetime, e.g. 3600, 30m, 12h (default)")
    token.set_defaults(handler=cmd_token)

    events = commands.add_parser("events", help="job events")
    events_commands = events.add_subparsers(dest="events_command", required=True)
    events_commands.add_parser(
        "prune", help="delete events older than MEDIAJOBS_EVENT_RETENTION now"
    ).set_defaults(handler=cmd_events_prune)

    storage = commands.add_parser("storage", help="object storage")
    storage_commands = storage.add_subparsers(dest="storage_command", required=True)
    storage_commands.add_parser(
        "check", help="write, read, list, sign and delete a probe object in the bucket"
    ).set_defaults(handler=cmd_storage_check)

    policy = commands.add_parser("policy", help="the live site policy (limits, review gate)")
    policy_commands = policy.add_subparsers(dest="policy_command", required=True)
    policy_commands.add_parser("show", help="print the site policy as JSON").set_defaults(
        handler=cmd_policy_show
    )
    policy_set = policy_commands.add_parser(
        "set", help="change fields, e.g. photo_review_enabled=true max_megapixels=40"
    )
    policy_set.add_argument("changes", nargs="+", metavar="FIELD=VALUE")
    policy_set.set_defaults(handler=cmd_policy_set)
    return parser


def _add_listen(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="listen address (default MEDIAJOBS_HOST or 127.0.0.1)")
    parser.add_argument("--port", type=int, help="listen port (default MEDIAJOBS_PORT or 8000)")


def _database_url(settings: Settings) -> str:
    if not settings.database_url:
        raise ConfigError("DATABASE_URL", "is required for this command (mediajobs dev embeds one)")
    return settings.database_url


# -- migrate, config ---------------------------------------------------------------------


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    applied = asyncio.run(migrate(_database_url(settings)))
    print(f"applied {len(applied)} migration(s)" + (": " + ", ".join(applied) if applied else ""))
    return 0


def cmd_config(args: argparse.Namespace, settings: Settings) -> int:
    print(json.dumps(settings.describe(), indent=2))
    return 0


# -- worker ------------------------------------------------------------------------------


def load_registry(spec: str, settings: Settings) -> HandlerRegistry:
    """Import ``module:callable`` and call it with the settings."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError("--app", f"expected module:callable, got {spec!r}")
    try:
        factory: RegistryFactory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError("--app", f"cannot load {spec!r}: {exc}") from exc
    registry = factory(settings)
    if not isinstance(registry, HandlerRegistry):
        raise ConfigError("--app", f"{spec!r} did not return a HandlerRegistry")
    return registry


def worker_options(settings: Settings, **overrides: Any) -> WorkerOptions:
    options = WorkerOptions(
        concurrency=settings.worker_concurrency,
        lease=settings.lease_seconds,
        poll_interval=settings.poll_interval,
        shutdown_grace=settings.shutdown_grace,
        hot_age=settings.job_retention_hot,
        archive_age=settings.job_retention,
        progress_interval=settings.progress_interval,
    )
    return dataclasses.replace(options, **{k: v for k, v in overrides.items() if v is not None})


@contextlib.asynccontextmanager
async def open_worker(
    settings: Settings,
    registry: HandlerRegistry,
    options: WorkerOptions,
    *,
    fake_redis: Any = None,
) -> AsyncIterator[Worker]:
    """The worker's composition root: its own pool, a Redis client for events, the queue
    (which records an event with each transition) and the worker, whose maintenance also
    prunes old events. Everything is closed on exit."""
    url = _database_url(settings)
    pool = await open_pool(
        url, name="queue", min_size=2, max_size=max(4, min(options.concurrency + 2, 20))
    )
    redis = redis_client(settings, fake_redis)
    publisher = RedisPublisher(redis, settings.events_channel)
    events = EventStore(pool)

    async def prune_events() -> None:
        await events.prune(settings.event_retention)

    try:
        yield Worker(
            JobQueue(pool, hooks=EventRecorder(publisher)),
            registry,
            conninfo=url,
            options=options,
            maintenance=[prune_events],
        )
    finally:
        await registry.aclose()
        await redis.aclose()
        await pool.close()


async def run_worker(
    settings: Settings, registry: HandlerRegistry, options: WorkerOptions
) -> WorkerStats:
    """Run a worker until SIGTERM/SIGINT (or, with burst, until the queue is drained)."""
    async with open_worker(settings, registry, options) as worker:
        with _signals(worker.stop):
            return await worker.run()


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    settings = with_dev_secret(settings)  # the memory store's signing key derives from it
    registry = load_registry(args.app, settings)
    kinds = [kind.strip() for kind in args.kinds.split(",")] if args.kinds else None
    try:
        registry.select(kinds)
    except ValueError as exc:
        raise ConfigError("--kinds", str(exc)) from exc
    options = worker_options(
        settings, concurrency=args.concurrency, kinds=kinds, burst=args.burst or None
    )
    stats = asyncio.run(run_worker(settings, registry, options))
    print(json.dumps(dataclasses.asdict(stats)))
    return 0


@contextlib.contextmanager
def _signals(stop: Callable[[], None]) -> Iterator[None]:
    """SIGTERM/SIGINT call ``stop`` (a second signal is passed on as a second call)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    try:
        yield
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


# -- serve, dev --------------------------------------------------------------------------


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the caller stops it (and the worker). At
    shutdown it ends the SSE streams first; uvicorn waits for open responses to finish."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    def __init__(self, config: uvicorn.Config, app: Starlette) -> None:
        super().__init__(config)
        self._app = app  # config.loaded_app is wrapped in uvicorn's middleware

    async def shutdown(self, sockets: list[Any] | None = None) -> None:
        close_streams(self._app)
        await super().shutdown(sockets)

    def stop(self) -> None:
        if self.should_exit:
            self.force_exit = True
        self.should_exit = True


def _uvicorn_config(app: Any, args: argparse.Namespace, settings: Settings) -> uvicorn.Config:
    # Stream tickets travel in query strings: keep them out of the access log.
    logging.getLogger("uvicorn.access").addFilter(RedactTickets())
    return uvicorn.Config(
        app,
        host=args.host or settings.host,
        port=settings.port if args.port is None else args.port,
        log_level=settings.log_level.lower(),
        log_config=None,  # our handlers: request ids, JSON lines in production
        lifespan="on",
        proxy_headers=True,
        timeout_graceful_shutdown=10,
        http=http_protocol(settings.header_timeout),  # closes requests stuck in their headers
    )


def _listen_settings(args: argparse.Namespace, settings: Settings) -> Settings:
    """Settings with --host/--port applied (the memory store's URLs name them)."""
    return dataclasses.replace(
        settings,
        host=args.host or settings.host,
        port=settings.port if args.port is None else args.port,
    )


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    settings = with_dev_secret(_listen_settings(args, settings))
    app = create_app(settings)
    server = _Server(_uvicorn_config(app, args, settings), app)

    async def serve() -> None:
        with _signals(server.stop):
            await server.serve()

    asyncio.run(serve())
    return 0


def cmd_dev(args: argparse.Namespace, settings: Settings) -> int:
    if settings.env is Environment.PRODUCTION:
        raise ConfigError("MEDIAJOBS_ENV", "mediajobs dev is for development, not production")
    from mediajobs.devenv import EmbeddedPostgres, fake_redis_server

    embedded = None
    if not settings.database_url:
        embedded = EmbeddedPostgres(settings.data_dir)
        settings = dataclasses.replace(settings, database_url=embedded.url)
    fake_server = None if settings.redis_url else fake_redis_server()
    try:
        asyncio.run(_dev(args, settings, fake_server))
    finally:
        if embedded is not None:
            embedded.close()
    return 0


async def _dev(args: argparse.Namespace, settings: Settings, fake_server: Any) -> None:
    settings = with_dev_secret(_listen_settings(args, settings))
    url = _database_url(settings)
    applied = await migrate(url)
    log.info("migrations applied: %s", ", ".join(applied) or "none needed")
    # One set of stores for the API and the worker: the memory store lives in this process.
    stores = stores_for(settings)
    app = create_app(settings, fake_redis=fake_server, stores=stores)
    server = _Server(_uvicorn_config(app, args, settings), app)
    registry = build_registry(settings, stores=stores)
    async with open_worker(
        settings, registry, worker_options(settings), fake_redis=fake_server
    ) as worker:

        def stop() -> None:
            server.stop()
            worker.stop()

        with _signals(stop):
            worker_task = asyncio.create_task(worker.run())
            log.info("mediajobs dev: http://%s:%d", server.config.host, server.config.port)
            await server.serve()
            worker.stop()
            await worker_task
    await stores.close()


# -- token, events ----------------------------------------------------------------------


def cmd_token(args: argparse.Namespace, settings: Settings) -> int:
    settings = with_dev_secret(settings)
    try:
        ttl = parse_duration(args.ttl)
    except ValueError as exc:
        raise ConfigError("--ttl", str(exc)) from None
    if ttl < 1:
        raise ConfigError("--ttl", "must be at least one second")
    auth = Authenticator.from_settings(settings)
    print(auth.issue_token(args.user, roles=["admin"] if args.admin else [], ttl=ttl))
    return 0


def cmd_events_prune(args: argparse.Namespace, settings: Settings) -> int:
    async def prune(queue: JobQueue) -> int | None:
        return await EventStore(queue.pool).prune(settings.event_retention)

    deleted = _with_queue(settings, prune)
    print("another process is pruning" if deleted is None else f"pruned {deleted} event(s)")
    return 0


# -- policy ------------------------------------------------------------------------------


def cmd_policy_show(args: argparse.Namespace, settings: Settings) -> int:
    async def show(queue: JobQueue) -> SitePolicy:
        return await SitePolicies(queue.pool).load()

    print(json.dumps(_with_queue(settings, show).to_json(), indent=2))
    return 0


def cmd_policy_set(args: argparse.Namespace, settings: Settings) -> int:
    """``FIELD=VALUE`` pairs; a value is read as JSON when it parses (numbers, booleans,
    the variants list), else as text. Workers apply the change from their next job."""
    changes: dict[str, Any] = {}
    for item in args.changes:
        name, sep, text = item.partition("=")
        if not sep or not name:
            raise ConfigError("policy set", f"expected FIELD=VALUE, got {item!r}")
        try:
            changes[name.strip()] = json.loads(text)
        except json.JSONDecodeError:
            changes[name.strip()] = text

    async def update(queue: JobQueue) -> SitePolicy:
        return await SitePolicies(queue.pool).update(changes, by="cli")

    try:
        policy = _with_queue(settings, update)
    except PolicyInvalid as exc:
        print(f"mediajobs: policy not changed: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(policy.to_json(), indent=2))
    return 0


# -- storage -----------------------------------------------------------------------------


def cmd_storage_check(args: argparse.Namespace, settings: Settings) -> int:
    """The active bucket: a full probe. Previous buckets (read and delete only): a listing."""

    async def check() -> int:
        stores = stores_for(settings)
        try:
            report = await check_store(stores.active)
            for line in report.lines():
                print(line)
            healthy = report.ok
            for store in stores.stores:
                if store is stores.active:
                    continue
                try:
                    page = await store.list("media/", limit=1)
                    print(
                        f"previous {store.provider}://{store.bucket}: ok (readable, "
                        f"{'has objects' if page.items else 'empty'})"
                    )
                except StorageError as exc:
                    healthy = False
                    print(f"previous {store.provider}://{store.bucket}: FAILED ({exc.code}): {exc}")
            return 0 if healthy else 1
        finally:
            await stores.close()

    return asyncio.run(check())


# -- jobs --------------------------------------------------------------------------------


def _with_queue(settings: Settings, action: Callable[[JobQueue], Any]) -> Any:
    async def run() -> Any:
        pool = await open_pool(_database_url(settings), name="cli", min_size=1, max_size=2)
        try:
            return await action(JobQueue(pool))
        finally:
            await pool.close()

    return asyncio.run(run())


def _job_json(job: Any) -> str:
    return json.dumps(dataclasses.asdict(job), default=str, indent=2)


def cmd_jobs_ping(args: argparse.Namespace, settings: Settings) -> int:
    async def ping(queue: JobQueue) -> int:
        started = time.perf_counter()
        enqueued = await queue.enqueue(JobSpec(PING_KIND, "operator", max_attempts=1))
        deadline = started + args.timeout
        while time.perf_counter() < deadline:
            job = await queue.get(enqueued.id)
            if job is not None and job.state.finished:
                elapsed = (time.perf_counter() - started) * 1000
                print(
                    json.dumps(
                        {
                            "state": job.state.value,
                            "result": job.result,
                            "roundTripMs": round(elapsed, 1),
                        }
                    )
                )
                return 0 if job.state.value == "succeeded" else 1
            await asyncio.sleep(0.01)
        await queue.cancel(enqueued.id)
        print(f"no worker answered within {args.timeout:g}s", file=sys.stderr)
        return 1

    result: int = _with_queue(settings, ping)
    return result


def cmd_jobs_show(args: argparse.Namespace, settings: Settings) -> int:
    job = _with_queue(settings, lambda queue: queue.get(args.job_id))
    if job is None:
        print(f"no job {args.job_id}", file=sys.stderr)
        return 1
    print(_job_json(job))
    return 0


def cmd_jobs_cancel(args: argparse.Namespace, settings: Settings) -> int:
    state = _with_queue(settings, lambda queue: queue.cancel(args.job_id))
    if state is None:
        print(f"no unfinished job {args.job_id}", file=sys.stderr)
        return 1
    print("cancelled" if state.value == "cancelled" else "cancel requested (running)")
    return 0


def cmd_jobs_stats(args: argparse.Namespace, settings: Settings) -> int:
    async def stats(queue: JobQueue) -> dict[str, Any]:
        counts = await queue.counts()
        return {
            "byState": {state.value: n for state, n in counts.items()},
            "oldestQueuedSeconds": round(await queue.oldest_queued_age(), 3),
        }

    print(json.dumps(_with_queue(settings, stats)))
    return 0


def cmd_jobs_enqueue(args: argparse.Namespace, settings: Settings) -> int:
    try:
        payload = json.loads(args.payload)
    except json.JSONDecodeError as exc:
        raise ConfigError("--payload", f"not JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise ConfigError("--payload", "must be a JSON object")
    spec = JobSpec(args.kind, args.owner, payload, delay=args.delay, max_attempts=args.max_attempts)
    enqueued = _with_queue(settings, lambda queue: queue.enqueue(spec))
    print(enqueued.id)
    return 0
