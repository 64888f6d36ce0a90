"""The unit tier needs no Postgres and no Redis: a unit test that asks for them (through
``services``, ``database_url``, ``redis_url``, ...) fails here instead of quietly making
the fast tier slow. Such a test belongs in ``tests/integration``."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def services() -> None:
    """Refuses: unit tests use no services."""
    pytest.fail(
        "tests/unit uses no Postgres or Redis: move this test to tests/integration",
        pytrace=False,
    )
