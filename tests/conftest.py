"""Finds real services for the suite, once per run, and only when a test needs them.

Nothing is looked for until the first test that asks for the ``services`` fixture (through
``database_url``, ``redis_url``, ``migrated_template``, ...), so ``pytest tests/unit`` runs
with no Postgres and no Redis at all (``tests/unit/conftest.py`` refuses the fixture there).

Postgres: DATABASE_URL, else the local server on 127.0.0.1:5432, else an embedded Postgres
(pgserver). Redis: REDIS_URL, else 127.0.0.1:6379, else a `redis-server` binary on a free
port, else fakeredis's TCP server. With MEDIAJOBS_REQUIRE_SERVICES=1 (or
--require-services) the run refuses the embedded fallbacks. The summary at the end says
what was used.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
from psycopg import conninfo, sql

from tests.support.redis_server import start_redis_server

REPO = Path(__file__).resolve().parent.parent
LOCAL_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
LOCAL_REDIS = "redis://127.0.0.1:6379/0"


@dataclass
class Services:
    pg_admin_url: str
    pg_source: str
    redis_url: str
    redis_source: str
    cleanups: list[Any]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--require-services",
        action="store_true",
        help="fail unless real Postgres and Redis servers answer (CI)",
    )


def _pg_answers(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=2) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error:
        return False
    return True


def _redis_answers(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _real_server(
    variable: str, local: str, answers: Callable[[str], bool], required: bool
) -> tuple[str, str] | None:
    """The server named by ``variable``, else the local one, if it answers. None when
    neither does (an error when real servers are required)."""
    env_url = os.environ.get(variable)
    if env_url and answers(env_url):
        return env_url, variable
    if answers(local):
        return local, f"local server {urlsplit(local).netloc.rpartition('@')[2]}"
    if required:
        raise pytest.UsageError(f"MEDIAJOBS_REQUIRE_SERVICES: no server answers at {local}")
    return None


def _find_postgres(required: bool, cleanups: list[Any]) -> tuple[str, str]:
    found = _real_server("DATABASE_URL", LOCAL_PG, _pg_answers, required)
    if found:
        return found
    import pgserver

    data = Path(tempfile.mkdtemp(prefix="mediajobs-pg-"))
    server = pgserver.get_server(data, cleanup_mode="delete")
    cleanups.append(server.cleanup)
    return server.get_uri(), "embedded Postgres (pgserver)"


def _find_redis(required: bool, cleanups: list[Any]) -> tuple[str, str]:
    found = _real_server("REDIS_URL", LOCAL_REDIS, _redis_answers, required)
    if found:
        return found
    port = free_port()
    binary = shutil.which("redis-server")
    if binary:
        try:
            proc = start_redis_server(port, binary)
        except RuntimeError as exc:
            raise pytest.UsageError(str(exc)) from None
        cleanups.append(proc.terminate)
        return f"redis://127.0.0.1:{port}/0", f"redis-server binary on port {port}"
    from fakeredis import TcpFakeServer

    server = TcpFakeServer(("127.0.0.1", port), server_type="redis")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    cleanups.append(server.shutdown)
    return f"redis://127.0.0.1:{port}/0", f"fakeredis TCP server on port {port}"


def _require_services(config: pytest.Config) -> bool:
    return bool(config.getoption("--require-services")) or (
        os.environ.get("MEDIAJOBS_REQUIRE_SERVICES") == "1"
    )


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    services = config.stash.get(SERVICES, None)
    if services is None:
        terminalreporter.write_line("postgres, redis: not used (no test asked for them)")
        return
    terminalreporter.write_line(f"postgres: {services.pg_source}")
    terminalreporter.write_line(f"redis: {services.redis_source}")


SERVICES = pytest.StashKey[Services]()


@pytest.fixture(scope="session")
def services(pytestconfig: pytest.Config) -> Iterator[Services]:
    """Postgres and Redis for the run, found (or booted) when a test first needs them and
    stopped at the end of the session."""
    required = _require_services(pytestconfig)
    cleanups: list[Any] = []
    try:
        pg_url, pg_source = _find_postgres(required, cleanups)
        redis_url, redis_source = _find_redis(required, cleanups)
        found = Services(pg_url, pg_source, redis_url, redis_source, cleanups)
        pytestconfig.stash[SERVICES] = found
        yield found
    finally:
        for cleanup in reversed(cleanups):
            cleanup()


def database_url_for(admin_url: str, name: str) -> str:
    return conninfo.make_conninfo(admin_url, dbname=name)


def create_database(admin_url: str, name: str, template: str | None = None) -> str:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template:
            statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
        conn.execute(statement)
    return database_url_for(admin_url, name)


def drop_database(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture(scope="session")
def migrated_template(services: Services) -> Iterator[str]:
    """A database migrated once per run; tests copy it."""
    import asyncio

    from mediajobs.db import migrate

    name = f"mj_tpl_{uuid.uuid4().hex[:10]}"
    url = create_database(services.pg_admin_url, name)
    asyncio.run(migrate(url))
    yield name
    drop_database(services.pg_admin_url, name)


@pytest.fixture
def database_url(services: Services, migrated_template: str) -> Iterator[str]:
    """A fresh, migrated database of this test's own."""
    name = f"mj_t_{uuid.uuid4().hex[:12]}"
    url = create_database(services.pg_admin_url, name, template=migrated_template)
    yield url
    drop_database(services.pg_admin_url, name)


@pytest.fixture
def empty_database_url(services: Services) -> Iterator[str]:
    """A fresh database with no schema at all."""
    name = f"mj_e_{uuid.uuid4().hex[:12]}"
    url = create_database(services.pg_admin_url, name)
    yield url
    drop_database(services.pg_admin_url, name)


@pytest.fixture(scope="session")
def vector_pg_admin_url() -> Iterator[str]:
    """An embedded Postgres (pgserver), which ships pgvector, for the tests of vector
    features: the machine's and CI's server have no pgvector, and these tests are never
    skipped for it. DATABASE_URL_PGVECTOR names another server with pgvector instead."""
    given = os.environ.get("DATABASE_URL_PGVECTOR")
    if given:
        yield given
        return
    import pgserver

    data = Path(tempfile.mkdtemp(prefix="mediajobs-pgvector-"))
    server = pgserver.get_server(data, cleanup_mode="delete")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def vector_template(vector_pg_admin_url: str) -> Iterator[str]:
    """A migrated database with the vector extension on the pgvector server; tests copy it."""
    import asyncio

    from mediajobs.db import migrate

    name = f"mj_vtpl_{uuid.uuid4().hex[:10]}"
    url = create_database(vector_pg_admin_url, name)
    asyncio.run(migrate(url))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    yield name
    drop_database(vector_pg_admin_url, name)


@pytest.fixture
def vector_database_url(vector_pg_admin_url: str, vector_template: str) -> Iterator[str]:
    """A fresh, migrated database with pgvector, of this test's own."""
    name = f"mj_v_{uuid.uuid4().hex[:12]}"
    url = create_database(vector_pg_admin_url, name, template=vector_template)
    yield url
    drop_database(vector_pg_admin_url, name)


@pytest.fixture
def redis_url(services: Services) -> str:
    return services.redis_url


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    """A moto S3 server for the module, with boto3's credential chain pointed at it."""
    from tests.support.emulators import S3_CREDENTIALS, moto_server

    with pytest.MonkeyPatch.context() as patch, moto_server() as url:
        for name, value in S3_CREDENTIALS.items():  # boto3's credential chain reads these
            patch.setenv(name, value)
        yield url


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny CLIP model directory (Immich's layout; see mediajobs.vision.testing) whose
    tokenizer knows the default vocabulary's words."""
    from mediajobs.vision.tags import load_vocabulary
    from mediajobs.vision.testing import write_tiny_clip

    directory = tmp_path_factory.mktemp("clip") / "tiny-clip"
    return write_tiny_clip(directory, words=load_vocabulary())
