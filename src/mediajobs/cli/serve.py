"""``mediajobs serve`` (the HTTP API) and ``mediajobs dev`` (the API and a worker in one
process, on an embedded Postgres and an in-process Redis unless DATABASE_URL and REDIS_URL
name real ones). Both stop in order on SIGTERM/SIGINT: the server first, then the worker
with its grace period."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
from typing import Any

from mediajobs.cli.common import Commands, bounded, database_url, handle_signals
from mediajobs.cli.worker import open_worker
from mediajobs.config import Environment, Settings
from mediajobs.db.migrate import migrate
from mediajobs.devenv import with_dev_secret
from mediajobs.errors import ConfigError
from mediajobs.handlers import build_registry
from mediajobs.queue import WorkerOptions
from mediajobs.service.app import close_streams, create_app
from mediajobs.service.server import Server, server_config
from mediajobs.storage.factory import stores_for

log = logging.getLogger("mediajobs")


def add_dev(commands: Commands) -> None:
    """The ``dev`` command's parser."""
    dev = commands.add_parser(
        "dev",
        help="API + worker in one process (embedded services)",
        description="Development: apply the migrations, then serve the HTTP API and run a "
        "worker in this process, on an embedded Postgres and an in-process Redis unless "
        "DATABASE_URL and REDIS_URL name real ones. Stops on SIGTERM/SIGINT.",
    )
    _add_listen(dev)
    dev.set_defaults(handler=cmd_dev)


def add_serve(commands: Commands) -> None:
    """The ``serve`` command's parser."""
    serve = commands.add_parser(
        "serve",
        help="run the HTTP API",
        description="Serve the HTTP API on MEDIAJOBS_HOST:MEDIAJOBS_PORT (or --host/--port) "
        "until SIGTERM/SIGINT. Jobs are run by `mediajobs worker`.",
    )
    _add_listen(serve)
    serve.set_defaults(handler=cmd_serve)


def _add_listen(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="listen address (default MEDIAJOBS_HOST or 127.0.0.1)")
    parser.add_argument(
        "--port",
        type=bounded(int, 1, 65535),
        help="listen port, 1..65535 (default MEDIAJOBS_PORT or 8000)",
    )


def _listen_settings(args: argparse.Namespace, settings: Settings) -> Settings:
    """Settings with --host/--port applied (the memory store's URLs name them)."""
    return dataclasses.replace(
        settings,
        host=args.host or settings.host,
        port=settings.port if args.port is None else args.port,
    )


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    """Serve the API until SIGTERM/SIGINT."""
    settings = with_dev_secret(_listen_settings(args, settings))
    app = create_app(settings)
    server = Server(server_config(app, settings), on_shutdown=lambda: close_streams(app))

    async def serve() -> None:
        with handle_signals(server.stop):
            await server.serve()

    asyncio.run(serve())
    return 0


def cmd_dev(args: argparse.Namespace, settings: Settings) -> int:
    """The API and a worker in this process (development only), on the embedded services
    where DATABASE_URL or REDIS_URL is unset; migrates the database first."""
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
    url = database_url(settings)
    applied = await migrate(url)
    log.info("migrations applied: %s", ", ".join(applied) or "none needed")
    # One set of stores for the API and the worker: the memory store lives in this process.
    stores = stores_for(settings)
    app = create_app(settings, fake_redis=fake_server, stores=stores)
    server = Server(server_config(app, settings), on_shutdown=lambda: close_streams(app))
    async with open_worker(
        settings,
        build_registry,
        WorkerOptions.from_settings(settings),
        stores=stores,
        fake_redis=fake_server,
    ) as worker:

        def stop() -> None:
            server.stop()
            worker.stop()

        with handle_signals(stop):
            worker_task = asyncio.create_task(worker.run())
            log.info("mediajobs dev: http://%s:%d", server.config.host, server.config.port)
            await server.serve()
            if not worker.stopping:  # the server stopped on its own; a second stop would
                worker.stop()  # cut the running jobs' grace period short
            await worker_task
    await stores.close()
