"""A Postgres server of one test's own (pgserver's binaries, a temporary data directory, a
Unix socket), which the test can stop and start again: outages without touching the
machine's Postgres."""

from __future__ import annotations

import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

with warnings.catch_warnings():  # platformdirs warns at import when XDG_RUNTIME_DIR is unset
    warnings.simplefilter("ignore")
    import pgserver
    from pgserver import _commands


class OwnPostgres:
    """``url`` stays the same across ``stop()`` and ``start()``."""

    def __init__(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="mj-outage-pg-"))
        self.pgdata = self._dir / "pg"
        self.pgdata.mkdir()
        self._server: Any = pgserver.get_server(self.pgdata, cleanup_mode="delete")
        self.url: str = self._server.get_uri()
        self._socket_dir = parse_qs(urlsplit(self.url).query)["host"][0]

    def _pg_ctl(self, *args: str) -> None:
        _commands.pg_ctl(list(args), pgdata=self.pgdata, user=self._server.system_user, timeout=30)

    def stop(self) -> None:
        """Fast shutdown: open sessions are ended (clients see AdminShutdown)."""
        self._pg_ctl("-w", "-m", "fast", "stop")

    def start(self) -> None:
        self._pg_ctl(
            "-w",
            "-o",
            '-h ""',
            "-o",
            f"-k {self._socket_dir}",
            "-l",
            str(self.pgdata / "log"),
            "start",
        )

    def close(self) -> None:
        self._server.cleanup()
        shutil.rmtree(self._dir, ignore_errors=True)
