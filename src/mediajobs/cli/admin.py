"""The operator's one-shot commands: ``migrate``, ``config``, ``token`` and
``events prune``."""

from __future__ import annotations

import argparse
import asyncio
import sys

from mediajobs.cli.common import Commands, print_json, reachable_database, with_pool
from mediajobs.config import DEV_SECRET_FILE, Environment, Settings, parse_duration
from mediajobs.db.migrate import migrate
from mediajobs.db.pool import Pool
from mediajobs.devenv import with_dev_secret
from mediajobs.errors import ConfigError
from mediajobs.realtime import EventStore
from mediajobs.service.auth import Authenticator


def add_migrate(commands: Commands) -> None:
    """The ``migrate`` command's parser."""
    commands.add_parser(
        "migrate",
        help="apply database migrations",
        description="Apply the migrations the database at DATABASE_URL lacks and print which "
        "(idempotent, safe when run concurrently).",
    ).set_defaults(handler=cmd_migrate)


def add_config(commands: Commands) -> None:
    """The ``config`` command's parser."""
    commands.add_parser(
        "config",
        help="print the effective configuration",
        description="Print the configuration the environment gives (MEDIAJOBS_* and the rest) "
        "as JSON, secrets hidden; jwtSecret says where the one in use comes from.",
    ).set_defaults(handler=cmd_config)


def add_token(commands: Commands) -> None:
    """The ``token`` command's parser."""
    token = commands.add_parser(
        "token", help="print a bearer token for USER (the page's user is dev)"
    )
    token.add_argument("user", help="the user id (the token's sub)")
    token.add_argument("--admin", action="store_true", help="grant the admin role")
    token.add_argument(
        "--scope",
        action="append",
        default=[],
        metavar="SCOPE",
        help="grant a scope (repeatable), e.g. collections:manage for a service token",
    )
    token.add_argument(
        "--ttl",
        type=token_ttl,
        default=token_ttl("12h"),
        help="lifetime, at least one second: e.g. 3600, 30m, 12h (default)",
    )
    token.set_defaults(handler=cmd_token)


def add_events(commands: Commands) -> None:
    """The ``events`` command's parser and its ``prune`` subcommand."""
    events = commands.add_parser("events", help="prune: delete events past their retention")
    events_commands = events.add_subparsers(dest="events_command", required=True)
    events_commands.add_parser(
        "prune", help="delete events older than MEDIAJOBS_EVENT_RETENTION now"
    ).set_defaults(handler=cmd_events_prune)


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    """Apply the migrations DATABASE_URL lacks; print which."""

    async def run() -> list[str]:
        return await migrate(await reachable_database(settings))

    applied = asyncio.run(run())
    print(f"applied {len(applied)} migration(s)" + (": " + ", ".join(applied) if applied else ""))
    return 0


def cmd_config(args: argparse.Namespace, settings: Settings) -> int:
    """Print the effective settings as JSON (secrets redacted)."""
    print_json(settings.describe(), indent=2)
    return 0


def token_ttl(text: str) -> float:
    """An argparse ``type``: a token lifetime (``parse_duration``) of at least one second,
    else argparse's one-line usage error."""
    try:
        ttl = parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if not ttl >= 1:
        raise argparse.ArgumentTypeError(f"must be at least one second, not {text}")
    return ttl


def cmd_token(args: argparse.Namespace, settings: Settings) -> int:
    """Print a bearer token for ``args.user``, signed with the settings' key. When that key
    is a development secret this command had to create (no MEDIAJOBS_JWT_SECRET, no
    jwt-secret file in MEDIAJOBS_DATA_DIR yet, e.g. run outside the repository), a warning
    on stderr names the new file: a server started elsewhere signs with another secret and
    will refuse the token."""
    secret_file = settings.data_dir / DEV_SECRET_FILE
    creates_secret = (
        not settings.jwt_secret
        and settings.env is not Environment.PRODUCTION
        and not secret_file.exists()
    )
    settings = with_dev_secret(settings)
    if creates_secret:
        print(
            f"mediajobs: warning: no development secret was found, so this token is signed "
            f"with a new one, written to {secret_file.absolute()}: a server started in "
            "another directory (another MEDIAJOBS_DATA_DIR) will refuse it with 401; run this "
            "where the server runs, or set MEDIAJOBS_DATA_DIR or MEDIAJOBS_JWT_SECRET as the "
            "server's",
            file=sys.stderr,
        )
    ttl: float = args.ttl
    auth = Authenticator.from_settings(settings)
    try:
        token = auth.issue_token(
            args.user, roles=["admin"] if args.admin else [], scopes=args.scope, ttl=ttl
        )
    except ValueError as exc:
        raise ConfigError("USER", str(exc)) from None
    print(token)
    return 0


def cmd_events_prune(args: argparse.Namespace, settings: Settings) -> int:
    """Delete events older than MEDIAJOBS_EVENT_RETENTION now."""

    async def prune(pool: Pool) -> int | None:
        return await EventStore(pool).prune(settings.event_retention)

    deleted = with_pool(settings, prune)
    print("another process is pruning" if deleted is None else f"pruned {deleted} event(s)")
    return 0
