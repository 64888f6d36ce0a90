"""What the commands share: the database a command needs (reachable, or one line naming
DATABASE_URL), a pool or a queue for the length of one command, argparse value checks,
signal handling, JSON output and the log levels of chatty libraries."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeAlias, TypeVar

from mediajobs.config import Environment, Settings, redact_url
from mediajobs.db.migrate import available_migrations
from mediajobs.db.pool import Pool, connect, open_pool
from mediajobs.devenv import dev_database_url
from mediajobs.errors import ConfigError, DatabaseError
from mediajobs.queue import JobQueue
from mediajobs.types import JSON

# Seconds a command waits for Postgres to answer (libpq's minimum): an unreachable
# DATABASE_URL fails at once with one line, not after the pool's 10 s and its warnings.
DB_CONNECT_TIMEOUT = 2

# Libraries whose INFO lines are their own chatter (the embedded Postgres's initdb output and
# pg_ctl command lines, every HTTP request httpx makes): WARNING and above unless DEBUG.
CHATTY_LOGGERS = ("pgserver", "httpx", "httpcore")

# What a command module adds its parsers to (``ArgumentParser.add_subparsers()``).
Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

N = TypeVar("N", int, float)
T = TypeVar("T")


def quiet_libraries(level: str) -> None:
    """Keep CHATTY_LOGGERS at WARNING unless MEDIAJOBS_LOG_LEVEL is DEBUG (our own INFO
    lines stay)."""
    chatty = (
        logging.DEBUG if level == "DEBUG" else max(logging.WARNING, logging.getLevelName(level))
    )
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(chatty)


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


def print_json(value: JSON, *, indent: int | None = None) -> None:
    """Print ``value`` as JSON on stdout (one line unless ``indent``)."""
    print(json.dumps(value, indent=indent))


def camel(name: str) -> str:
    """``handed_back`` -> ``handedBack``: the API's naming, for JSON the CLI prints."""
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def database_url(settings: Settings) -> str:
    """DATABASE_URL; ``ConfigError`` when unset (in development, with the export line for
    the database of a running ``make dev``)."""
    if settings.database_url:
        return settings.database_url
    hint = "mediajobs dev embeds one"
    if settings.env is not Environment.PRODUCTION:
        hint = (
            "for the database of a running `make dev`: "
            f'export DATABASE_URL="{dev_database_url(settings.data_dir)}"'
        )
    raise ConfigError("DATABASE_URL", f"is required for this command ({hint})")


async def reachable_database(settings: Settings) -> str:
    """DATABASE_URL, once one connection to it has succeeded within DB_CONNECT_TIMEOUT.

    Raises ConfigError when it is unset, DatabaseError with a one-line message naming the
    variable (in development: that `make dev` must be running) when nothing answers."""
    url = database_url(settings)
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


async def migrated_database(settings: Settings) -> str:
    """``reachable_database``, with every migration of this version applied. Raises
    ``DatabaseError`` naming the ones missing (run ``mediajobs migrate``), and
    ``psycopg.errors.UndefinedTable`` on a database that has none (``cli.main`` says to
    migrate): a worker would otherwise log a failed claim twice a second for ever."""
    url = await reachable_database(settings)
    async with await connect(url, application_name="mediajobs-cli") as conn:
        rows = await (await conn.execute("SELECT version FROM schema_migrations")).fetchall()
    applied = {row["version"] for row in rows}
    missing = [m.version for m in available_migrations() if m.version not in applied]
    if missing:
        raise DatabaseError(
            f"the database at DATABASE_URL={redact_url(url)} lacks migration(s) "
            f"{', '.join(missing)}: run `mediajobs migrate` first"
        )
    return url


def with_pool(settings: Settings, action: Callable[[Pool], Awaitable[T]]) -> T:
    """Run ``action`` with a small pool on DATABASE_URL (the command's composition root),
    then close the pool."""

    async def run() -> T:
        url = await reachable_database(settings)
        pool = await open_pool(
            url, name="cli", min_size=1, max_size=2, connect_timeout=DB_CONNECT_TIMEOUT
        )
        try:
            return await action(pool)
        finally:
            await pool.close()

    return asyncio.run(run())


def with_queue(settings: Settings, action: Callable[[JobQueue], Awaitable[T]]) -> T:
    """``with_pool`` for commands that work on the job queue."""
    return with_pool(settings, lambda pool: action(JobQueue(pool)))


@contextlib.contextmanager
def handle_signals(stop: Callable[[], None]) -> Iterator[None]:
    """SIGTERM/SIGINT call ``stop`` (a second signal is passed on as a second call)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    try:
        yield
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
