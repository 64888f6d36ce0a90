"""Embedded services for ``mediajobs dev`` (and for tests on a bare machine).

* Postgres: a real server from the ``pgserver`` package, data under ``<data_dir>/pg``.
* Redis: fakeredis in this process (``FakeServer``), shared by every client made here.

Both come from the ``dev`` extra; a missing package gets a message that says so.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any

from mediajobs.errors import ConfigError

log = logging.getLogger(__name__)

DEV_DATABASE = "mediajobs"


def _dev_extra_missing(package: str) -> ConfigError:
    return ConfigError(
        "DATABASE_URL" if package == "pgserver" else "REDIS_URL",
        f"is unset and the embedded replacement needs {package!r}: "
        "pip install 'mediajobs[dev]' (make dev does this), or set the variable",
    )


class EmbeddedPostgres:
    """A real Postgres server run from the pgserver package; stopped when closed."""

    def __init__(self, data_dir: Path) -> None:
        try:
            pgserver: Any = importlib.import_module("pgserver")
        except ImportError:
            raise _dev_extra_missing("pgserver") from None
        self._pgdata = data_dir / "pg"
        self._pgdata.parent.mkdir(parents=True, exist_ok=True)
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
