"""Fixtures of the integration tier (real Postgres and Redis come from tests/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from mediajobs.db import open_pool
from mediajobs.db.pool import Pool
from tests.support.inprocess import in_process_site


@pytest.fixture
async def client(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the app, with a worker draining its jobs, in this event loop on the
    test's own database. A module that needs other settings defines its own ``client``."""
    async with in_process_site(database_url) as http:
        yield http


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[Pool]:
    """A small pool (4 connections) on the test's own database, for repository tests."""
    opened = await open_pool(database_url, name="test", min_size=1, max_size=4)
    yield opened
    await opened.close()
