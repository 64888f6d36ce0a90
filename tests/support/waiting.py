"""Waiting on a condition with a deadline, never on the clock alone: a test that waits a
fixed time either wastes it or fails on a loaded machine."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


async def wait_for(predicate: Callable[[], object], timeout: float, interval: float = 0.02) -> None:
    """Poll ``predicate`` (sync or async) until truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.02) -> None:
    """The blocking twin of ``wait_for``, for tests that are not async."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)
