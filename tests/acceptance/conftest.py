"""Fixtures shared by the acceptance tests that talk to one `mediajobs dev` per module."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from tests.support.sse import dev_site


@pytest.fixture(scope="module")
def api(services: Any, migrated_template: str) -> Iterator[str]:
    """A `mediajobs dev` for the module (a fresh copy of the migrated database); its URL.
    A module that needs other settings defines its own ``api``."""
    with dev_site(services, migrated_template) as base:
        yield base


@pytest.fixture
async def client(api: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=api, timeout=60) as http:
        yield http
