"""``mediajobs``: the command line. ``mediajobs --help`` lists every command from the
parser itself (one help line each), so the list cannot leave one out.

Commands that print JSON use the API's camelCase names (``jobs show`` is the API's job plus
the operator's fields). Commands that need the database try one connection first, with a
short timeout, and fail with one line naming DATABASE_URL when nothing answers.
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
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import Any, TypeVar

import httpx
import psycopg
import uvicorn
from starlette.applications import Starlette

from mediajobs.config import Environment, Settings, StorageKind, parse_duration, redact_url
from mediajobs.db.migrate import migrate
from mediajobs.db.policies import PolicyInvalid, SitePolicies, SitePolicy
from mediajobs.db.pool import Pool, connect, open_pool
from mediajobs.devenv import dev_database_url, with_dev_secret
from mediajobs.errors import ConfigError, DatabaseError, StorageError
from mediajobs.handlers import PING_KIND, WorkerResources, build_registry
from mediajobs.handlers.imaging_pool import ImagingPool, PoolOptions
from mediajobs.logs import configure_logging
from mediajobs.queue import HandlerRegistry, JobQueue, JobSpec, Worker, WorkerOptions, WorkerStats
from mediajobs.queue.models import Job
from mediajobs.realtime import EventRecorder, EventStore, RedisPublisher
from mediajobs.realtime.connect import redis_client
from mediajobs.service.app import close_streams, create_app
from mediajobs.service.auth import Authenticator, RedactTickets
from mediajobs.service.jobs import job_json
from mediajobs.service.models import SitePolicyUpdate, api_names
from mediajobs.service.policy import policy_json
from mediajobs.service.policy_text import fields_help, parse_assignments
from mediajobs.service.server import http_protocol
from mediajobs.storage import StoreRegistry
from mediajobs.storage.check import check_store
from mediajobs.storage.factory import memory_base_url, stores_for
from mediajobs.types import JSON

log = logging.getLogger("mediajobs")

DEFAULT_APP = "mediajobs.handlers:build_registry"
# Seconds a command waits for Postgres to answer (libpq's minimum): an unreachable
# DATABASE_URL fails at once with one line, not after the pool's 10 s and its warnings.
DB_CONNECT_TIMEOUT = 2
RegistryFactory = Callable[[WorkerResources], HandlerRegistry]


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
        configure_logging(settings.log_level, json_lines=settings.log_format == "json")
        quiet_libraries(settings.log_level)
        handler: Callable[[argparse.Namespace, Settings], int] = args.handler
        return handler(args, settings)
    except ConfigError as exc:
        print(f"mediajobs: configuration error: {exc}", file=sys.stderr)
        return 2
    except DatabaseError as exc:
        print(f"mediajobs: {exc}", file=sys.stderr)
        return 1
    except psycopg.errors.UndefinedTable:
        print(
            "mediajobs: the database at DATABASE_URL has no mediajobs tables: "
            "run `mediajobs migrate` first",
            file=sys.stderr,
        )
        return 1
    except psycopg.Error as exc:  # a value Postgres refused, a lost connection: one line
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"mediajobs: the database refused: {reason}", file=sys.stderr)
        return 1


# Libraries whose INFO lines are their own chatter (the embedded Postgres's initdb output and
# pg_ctl command lines, every HTTP request httpx makes): WARNING and above unless DEBUG.
CHATTY_LOGGERS = ("pgserver", "httpx", "httpcore")


def quiet_libraries(level: str) -> None:
    """Keep CHATTY_LOGGERS at WARNING unless MEDIAJOBS_LOG_LEVEL is DEBUG (our own INFO
    lines stay)."""
    chatty = (
        logging.DEBUG if level == "DEBUG" else max(logging.WARNING, logging.getLevelName(level))
    )
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(chatty)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mediajobs",
        description="mediajobs: every media operation is an asynchronous job.",
        epilog="`mediajobs COMMAND --help` describes one command. JSON output uses the API's "
        "camelCase names.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    dev = commands.add_parser("dev", help="API + worker in one process (embedded services)")
    _add_listen(dev)
    dev.set_defaults(handler=cmd_dev)

    serve = commands.add_parser("serve", help="run the HTTP API")
    _add_listen(serve)
    serve.set_defaults(handler=cmd_serve)

    worker = commands.add_parser("worker", help="claim and run jobs")
    worker.add_argument(
        "--concurrency", type=bounded(int, 1, 1000), help="jobs at once (default from env)"
    )
    worker.add_argument("--kinds", help="comma-separated job kinds (default: all registered)")
    worker.add_argument("--burst", action="store_true", help="exit once the queue is drained")
    worker.add_argument(
        "--app",
        default=DEFAULT_APP,
        help=f"module:callable(WorkerResources) -> HandlerRegistry (default {DEFAULT_APP})",
    )
    worker.set_defaults(handler=cmd_worker)

    commands.add_parser("migrate", help="apply database migrations").set_defaults(
        handler=cmd_migrate
    )
    commands.add_parser("config", help="print the effective configuration").set_defaults(
        handler=cmd_config
    )

    jobs = commands.add_parser(
        "jobs", help="ping | show ID | wait ID | cancel ID | stats | enqueue KIND"
    )
    jobs_commands = jobs.add_subparsers(dest="jobs_command", required=True)
    ping = jobs_commands.add_parser("ping", help="enqueue system.ping and wait for a worker")
    ping.add_argument("--timeout", type=float, default=10.0)
    ping.set_defaults(handler=cmd_jobs_ping)
    show = jobs_commands.add_parser("show", help="print one job as JSON")
    show.add_argument("job_id", type=uuid.UUID)
    show.set_defaults(handler=cmd_jobs_show)
    wait = jobs_commands.add_parser(
        "wait", help="wait until a job has finished, print it as JSON; exit 0 if it succeeded"
    )
    wait.add_argument("job_id", type=uuid.UUID)
    wait.add_argument("--timeout", type=float, default=60.0, help="seconds (default 60)")
    wait.set_defaults(handler=cmd_jobs_wait)
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
    enqueue.add_argument(
        "--delay", type=bounded(float, 0, MAX_DELAY), default=0.0, help="seconds (default 0)"
    )
    enqueue.add_argument("--max-attempts", type=bounded(int, 1, 1000), default=5)
    enqueue.set_defaults(handler=cmd_jobs_enqueue)

    token = commands.add_parser(
        "token", help="print a bearer token for USER (the page's user is dev)"
    )
    token.add_argument("user", help="the user id (the token's sub)")
    token.add_argument("--admin", action="store_true", help="grant the admin role")
    token.add_argument("--ttl", default="12h", help="lifetime, e.g. 3600, 30m, 12h (default)")
    token.set_defaults(handler=cmd_token)

    events = commands.add_parser("events", help="prune: delete events past their retention")
    events_commands = events.add_subparsers(dest="events_command", required=True)
    events_commands.add_parser(
        "prune", help="delete events older than MEDIAJOBS_EVENT_RETENTION now"
    ).set_defaults(handler=cmd_events_prune)

    storage = commands.add_parser("storage", help="check: probe the store the server uses")
    storage_commands = storage.add_subparsers(dest="storage_command", required=True)
    storage_commands.add_parser(
        "check",
        help="write, read, list, sign and delete a probe object in the bucket (in development: "
        "in the running server's memory store)",
    ).set_defaults(handler=cmd_storage_check)

    policy = commands.add_parser(
        "policy", help="show | set FIELD=VALUE...: the live site policy (limits, review gate)"
    )
    policy_commands = policy.add_subparsers(dest="policy_command", required=True)
    policy_commands.add_parser("show", help="print the site policy as JSON").set_defaults(
        handler=cmd_policy_show
    )
    policy_set = policy_commands.add_parser(
        "set",
        help="change fields, e.g. photoReviewEnabled=true maxMegapixels=40",
        epilog=fields_help(SitePolicyUpdate),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    policy_set.add_argument("changes", nargs="+", metavar="FIELD=VALUE")
    policy_set.set_defaults(handler=cmd_policy_set)
    return parser


MAX_DELAY = 10 * 365 * 86400.0  # seconds: a job's run_at stays a sane timestamp

N = TypeVar("N", int, float)
T = TypeVar("T")


def bounded(kind: Callable[[str], N], low: N, high: N) -> Callable[[str], N]:
    """An argparse ``type``: ``kind(text)`` within ``low..high`` (finite), else argparse's
    one-line usage error."""

    def parse(text: str) -> N:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not low <= value <= high:  # NaN fails this too
            raise argparse.ArgumentTypeError(f"must be {low:.12g}..{high:.12g}, not {text}")
        return value

    return parse


def _add_listen(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="listen address (default MEDIAJOBS_HOST or 127.0.0.1)")
    parser.add_argument("--port", type=int, help="listen port (default MEDIAJOBS_PORT or 8000)")


def _database_url(settings: Settings) -> str:
    if settings.database_url:
        return settings.database_url
    hint = "mediajobs dev embeds one"
    if settings.env is not Environment.PRODUCTION:
        hint = (
            "for the database of a running `make dev`: "
            f'export DATABASE_URL="{dev_database_url(settings.data_dir)}"'
        )
    raise ConfigError("DATABASE_URL", f"is required for this command ({hint})")


async def _reachable_database(settings: Settings) -> str:
    """DATABASE_URL, once one connection to it has succeeded within DB_CONNECT_TIMEOUT.

    Raises ConfigError when it is unset, DatabaseError with a one-line message naming the
    variable (in development: that `make dev` must be running) when nothing answers."""
    url = _database_url(settings)
    try:
        conn = await connect(
            url, application_name="mediajobs-cli", connect_timeout=DB_CONNECT_TIMEOUT
        )
    except DatabaseError as exc:
        cause = str(exc.__cause__ or exc).strip().splitlines()[0]
        reason = cause.removeprefix("connection failed: ").removeprefix("connection is bad: ")
        hint = (
            "is Postgres up and the variable right?"
            if settings.env is Environment.PRODUCTION
            else "in development, `make dev` must be running (it serves the embedded database),"
            " or set DATABASE_URL to a running Postgres"
        )
        raise DatabaseError(
            f"cannot reach the database at DATABASE_URL={redact_url(url)}: {reason}; {hint}"
        ) from None
    await conn.close()
    return url


# -- migrate, config ---------------------------------------------------------------------


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    async def run() -> list[str]:
        return await migrate(await _reachable_database(settings))

    applied = asyncio.run(run())
    print(f"applied {len(applied)} migration(s)" + (": " + ", ".join(applied) if applied else ""))
    return 0


def cmd_config(args: argparse.Namespace, settings: Settings) -> int:
    print(json.dumps(settings.describe(), indent=2))
    return 0


# -- worker ------------------------------------------------------------------------------


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


def worker_options(settings: Settings, **overrides: Any) -> WorkerOptions:
    """The worker's options from the settings (their one home), with ``overrides`` (the
    command line's) where not None."""
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
    url = _database_url(settings)
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
        registry = app(
            WorkerResources(settings=settings, pool=pool, stores=stores, imaging=imaging, http=http)
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
            JobQueue(pool, hooks=EventRecorder(RedisPublisher(redis, settings.events_channel))),
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
        with _signals(worker.stop):
            return await worker.run()


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    settings = with_dev_secret(settings)  # the memory store's signing key derives from it
    app = load_app(args.app)
    kinds = [kind.strip() for kind in args.kinds.split(",")] if args.kinds else None
    options = worker_options(
        settings, concurrency=args.concurrency, kinds=kinds, burst=args.burst or None
    )
    asyncio.run(_reachable_database(settings))
    stats = asyncio.run(run_worker(settings, app, options))
    print(json.dumps({_camel(name): n for name, n in dataclasses.asdict(stats).items()}))
    return 0


def _camel(name: str) -> str:
    """``handed_back`` -> ``handedBack``: the API's naming, for JSON the CLI prints."""
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


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
    async with open_worker(
        settings, build_registry, worker_options(settings), stores=stores, fake_redis=fake_server
    ) as worker:

        def stop() -> None:
            server.stop()
            worker.stop()

        with _signals(stop):
            worker_task = asyncio.create_task(worker.run())
            log.info("mediajobs dev: http://%s:%d", server.config.host, server.config.port)
            await server.serve()
            if not worker.stopping:  # the server stopped on its own; a second stop would
                worker.stop()  # cut the running jobs' grace period short
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
    try:
        token = auth.issue_token(args.user, roles=["admin"] if args.admin else [], ttl=ttl)
    except ValueError as exc:
        raise ConfigError("USER", str(exc)) from None
    print(token)
    return 0


def cmd_events_prune(args: argparse.Namespace, settings: Settings) -> int:
    async def prune(pool: Pool) -> int | None:
        return await EventStore(pool).prune(settings.event_retention)

    deleted = _with_pool(settings, prune)
    print("another process is pruning" if deleted is None else f"pruned {deleted} event(s)")
    return 0


# -- policy ------------------------------------------------------------------------------


def cmd_policy_show(args: argparse.Namespace, settings: Settings) -> int:
    async def show(queue: JobQueue) -> SitePolicy:
        return await SitePolicies(queue.pool).load()

    print(json.dumps(policy_json(_with_queue(settings, show)), indent=2))
    return 0


def cmd_policy_set(args: argparse.Namespace, settings: Settings) -> int:
    """``FIELD=VALUE`` pairs, parsed by the API's model (``policy set --help`` lists the
    fields); workers apply the change from their next job."""
    try:
        changes = parse_assignments(args.changes)
    except PolicyInvalid as exc:  # names the field as it was given
        return _policy_refused(exc.field, exc)

    async def update(queue: JobQueue) -> SitePolicy:
        return await SitePolicies(queue.pool).update(changes, by="cli")

    try:
        policy = _with_queue(settings, update)
    except PolicyInvalid as exc:  # the domain's check: named by the domain's field
        return _policy_refused(api_names(SitePolicyUpdate).get(exc.field, exc.field), exc)
    print(json.dumps(policy_json(policy), indent=2))
    return 0


def _policy_refused(name: str, exc: PolicyInvalid) -> int:
    reason = str(exc).removeprefix(f"{exc.field}: ")
    print(f"mediajobs: policy not changed: {name}: {reason}", file=sys.stderr)
    return 2


# -- storage -----------------------------------------------------------------------------


def cmd_storage_check(args: argparse.Namespace, settings: Settings) -> int:
    """The active bucket: a full probe. Previous buckets (read and delete only): a listing.

    The memory store (development) is served by the server process, so the probe goes to that
    process's ``/storage`` over HTTP (MEDIAJOBS_PORT names it), never to an empty store of
    this process; when nothing answers there, it says so."""
    settings = with_dev_secret(settings)  # the memory store's signing key derives from it
    remote = settings.storage.kind is StorageKind.MEMORY
    where = settings.storage.public_base_url or memory_base_url(settings)
    if remote:
        print(f"the memory store lives in the server process: checking the one at {where}")

    async def check() -> int:
        stores = stores_for(settings, remote_memory=remote)
        try:
            report = await check_store(stores.active)
            for line in report.lines():
                print(line)
            if remote and report.error_code == "storage_unavailable":
                print(
                    f"nothing answers at {where}: the memory store is served only while "
                    "`make dev` (or `mediajobs serve`) runs; start it, or set MEDIAJOBS_PORT "
                    "to its port"
                )
            elif remote and report.error_code == "storage_denied":
                print(
                    f"the server at {where} refused the signed probe: it signs with another "
                    "key (MEDIAJOBS_JWT_SECRET, or the jwt-secret file of its "
                    "MEDIAJOBS_DATA_DIR): run this with the server's settings"
                )
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


def _with_pool(settings: Settings, action: Callable[[Pool], Awaitable[T]]) -> T:
    """Run ``action`` with a small pool on DATABASE_URL (the command's composition root),
    then close the pool."""

    async def run() -> T:
        url = await _reachable_database(settings)
        pool = await open_pool(
            url, name="cli", min_size=1, max_size=2, connect_timeout=DB_CONNECT_TIMEOUT
        )
        try:
            return await action(pool)
        finally:
            await pool.close()

    return asyncio.run(run())


def _with_queue(settings: Settings, action: Callable[[JobQueue], Any]) -> Any:
    """``_with_pool`` for commands that work on the job queue."""
    return _with_pool(settings, lambda pool: action(JobQueue(pool)))


def operator_job_json(job: Job) -> dict[str, JSON]:
    """A job as ``GET /jobs/{id}`` shows it, plus what only an operator sees (owner,
    priority, lease, cancel flag, idempotency key), in the API's camelCase."""
    return {
        **job_json(job),
        "ownerId": job.owner_id,
        "priority": job.priority,
        "runAt": job.run_at.isoformat(),
        "leaseOwner": job.lease_owner,
        "leaseExpiresAt": job.lease_expires_at.isoformat() if job.lease_expires_at else None,
        "cancelRequested": job.cancel_requested,
        "idempotencyKey": job.idempotency_key,
    }


def _job_json(job: Job) -> str:
    return json.dumps(operator_job_json(job), indent=2)


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


def cmd_jobs_wait(args: argparse.Namespace, settings: Settings) -> int:
    """Poll the job until it has finished (or ``--timeout`` seconds): print it as JSON; exit
    0 when it succeeded, 1 when it failed or was cancelled (with its error on stderr), 1 on
    timeout."""

    async def wait(queue: JobQueue) -> Job | None:
        deadline = time.monotonic() + args.timeout
        while True:
            job = await queue.get(args.job_id)
            if job is None or job.state.finished or time.monotonic() > deadline:
                return job
            await asyncio.sleep(0.2)

    job = _with_queue(settings, wait)
    if job is None:
        print(f"no job {args.job_id}", file=sys.stderr)
        return 1
    print(_job_json(job))
    if not job.state.finished:
        print(f"job {job.id} still {job.state.value} after {args.timeout:g}s", file=sys.stderr)
        return 1
    if job.state.value != "succeeded":
        error = job.error or {}
        print(
            f"job {job.id} {job.state.value}: {error.get('code', '-')}: {error.get('message', '')}",
            file=sys.stderr,
        )
        return 1
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
