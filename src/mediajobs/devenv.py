"""Embedded services for ``mediajobs dev`` (and for tests on a bare machine).

* Postgres: a real server from the ``pgserver`` package, data under ``<data_dir>/pg``.
* Redis: fakeredis in this process (``FakeServer``), shared by every client made here.
* A JWT secret kept under the data directory, so development tokens survive restarts.

Both come from the ``dev`` extra; a missing package gets a message that says so.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import os
import secrets
import warnings
from pathlib import Path
from typing import Any

from mediajobs.config import DEV_SECRET_FILE, DEV_SECRET_PREFIX, Environment, Settings
from mediajobs.errors import ConfigError

log = logging.getLogger(__name__)

DEV_DATABASE = "mediajobs"


def _dev_extra_missing(package: str) -> ConfigError:
    return ConfigError(
        "DATABASE_URL" if package == "pgserver" else "REDIS_URL",
        f"is unset and the embedded replacement needs {package!r}: "
        "pip install 'mediajobs[dev]' (make dev does this), or set the variable",
    )


def dev_database_url(data_dir: Path) -> str:
    """The DATABASE_URL of the embedded Postgres that ``mediajobs dev`` runs with this data
    directory: its Unix socket lives in ``<data_dir>/pg`` (absolute, so it works anywhere)."""
    return f"postgresql://postgres:@/{DEV_DATABASE}?host={(data_dir / 'pg').resolve()}"


class EmbeddedPostgres:
    """A real Postgres server run from the pgserver package; stopped when closed."""

    def __init__(self, data_dir: Path) -> None:
        self._pgdata = data_dir / "pg"
        self._pgdata.parent.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            # pgserver keeps its lock under platformdirs' user_runtime_path, which warns
            # (RuntimeDirWarning) on a machine without XDG_RUNTIME_DIR and falls back to a
            # private directory of its own: nothing the developer needs to act on.
            warnings.filterwarnings("ignore", message=r".*XDG_RUNTIME_DIR", category=UserWarning)
            try:
                pgserver: Any = importlib.import_module("pgserver")
            except ImportError:
                raise _dev_extra_missing("pgserver") from None
            self._server: Any = pgserver.get_server(self._pgdata, cleanup_mode="stop")
        exists = self._server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{DEV_DATABASE}';")
        if "(1 row)" not in exists:
            self._server.psql(f"CREATE DATABASE {DEV_DATABASE};")
        self.url: str = self._server.get_uri(database=DEV_DATABASE)
        log.info("embedded Postgres: DATABASE_URL=%s", self.url)

    def close(self) -> None:
        self._server.cleanup()


def fake_redis_server() -> Any:
    """An in-process Redis (fakeredis) that clients of this process can share."""
    try:
        import fakeredis
    except ImportError:
        raise _dev_extra_missing("fakeredis") from None
    return fakeredis.FakeServer()


def dev_secret(data_dir: Path) -> str:
    """The development JWT secret, kept in ``<data_dir>/jwt-secret`` so tokens made by
    ``mediajobs token`` keep working across restarts. It starts with DEV_SECRET_PREFIX, so
    production refuses it."""
    path = data_dir / DEV_SECRET_FILE
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    secret = DEV_SECRET_PREFIX + secrets.token_urlsafe(32)
    # Created readable by the owner only; a concurrent creator's secret wins if it was first.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text(encoding="utf-8").strip()
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(secret + "\n")
    log.info("development JWT secret written to %s", path)
    return secret


def with_dev_secret(settings: Settings) -> Settings:
    """``settings`` with the development secret when none is configured (never in
    production, where MEDIAJOBS_JWT_SECRET is required)."""
    if settings.jwt_secret or settings.env is Environment.PRODUCTION:
        return settings
    return dataclasses.replace(settings, jwt_secret=dev_secret(settings.data_dir))
