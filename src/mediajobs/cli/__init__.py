"""``mediajobs``: the command line. ``mediajobs --help`` lists every command from the
parser itself (one help line each), so the list cannot leave one out.

Each command lives in the module of its concept, with the function that adds its parser
(``add_*``) next to the one that runs it (``cmd_*``): ``serve`` (serve, dev), ``worker``
(the worker and its composition root), ``admin`` (migrate, config, token, events prune),
``jobs``, ``storage``, ``policy``, ``ingest``, ``models``; what they share is in
``common``. ``build_parser`` lists the commands in the order ``--help`` shows them.

Commands that print JSON use the API's camelCase names (``jobs show`` is the API's job plus
the operator's fields). Commands that need the database try one connection first, with a
short timeout, and fail with one line naming DATABASE_URL when nothing answers.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

import psycopg

from mediajobs.cli import admin, ingest, jobs, models, policy, serve, storage, worker
from mediajobs.cli.common import Commands, quiet_libraries
from mediajobs.config import Settings
from mediajobs.errors import ConfigError, DatabaseError
from mediajobs.logs import configure_logging

# Every command, in the order `mediajobs --help` lists them.
COMMANDS: tuple[Callable[[Commands], None], ...] = (
    serve.add_dev,
    serve.add_serve,
    worker.add_worker,
    admin.add_migrate,
    admin.add_config,
    jobs.add_jobs,
    admin.add_token,
    admin.add_events,
    storage.add_storage,
    policy.add_policy,
    ingest.add_ingest,
    models.add_models,
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command (``argv``: the arguments after ``mediajobs``; None: the process's)
    and return its exit code: 2 for a configuration error, 1 when the database fails or
    refuses, each with one line on stderr; 141 (128 + SIGPIPE), silently, when whoever
    reads its output stops reading (``mediajobs policy show | head``)."""
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        configure_logging(settings.log_level, json_lines=settings.log_format == "json")
        quiet_libraries(settings.log_level)
        handler: Callable[[argparse.Namespace, Settings], int] = args.handler
        code = handler(args, settings)
        sys.stdout.flush()  # a reader that is gone shows here, not in Python's exit
        return code
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
    except BrokenPipeError:
        # The reader is gone. Python flushes stdout again at exit, which would fail (and
        # print) once more: point it at /dev/null (the recipe of the `signal` module's docs,
        # "Note on SIGPIPE").
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


def build_parser() -> argparse.ArgumentParser:
    """The ``mediajobs`` parser with every command in ``COMMANDS``."""
    parser = argparse.ArgumentParser(
        prog="mediajobs",
        description="mediajobs: every media operation is an asynchronous job.",
        epilog="`mediajobs COMMAND --help` describes one command. JSON output uses the API's "
        "camelCase names.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(commands)
    return parser


__all__ = ["COMMANDS", "build_parser", "main"]
