"""The imaging pool's free slots (``FreeSlots``): when every process is busy, a waiting call
of higher priority gets the next free one; first come first served within one priority; a
call cancelled while it waits takes no slot."""

from __future__ import annotations

import asyncio

import pytest

from mediajobs.handlers.imaging_pool import FreeSlots
from mediajobs.queue import kinds

pytestmark = pytest.mark.timeout(10)

UPLOAD = 0  # media.process's priority
INGEST = kinds.INGEST_BATCH_PRIORITY


async def waiter(slots: FreeSlots[str], priority: int, got: list[tuple[str, str]], name: str):
    slot = await slots.get(priority)
    got.append((name, slot))


async def queued(slots: FreeSlots[str], *calls: tuple[str, int], got: list[tuple[str, str]]):
    """Start a waiting call per (name, priority), in order; return their tasks once each
    one waits."""
    tasks = []
    for name, priority in calls:
        tasks.append(asyncio.create_task(waiter(slots, priority, got, name)))
        await asyncio.sleep(0)  # it runs up to its wait
    assert slots.waiting == len(calls)
    return tasks


async def test_an_idle_slot_is_taken_at_once_whatever_the_priority():
    slots: FreeSlots[str] = FreeSlots()
    slots.put("p1")
    assert await slots.get(INGEST) == "p1"
    assert (slots.idle, slots.waiting) == (0, 0)


async def test_a_freed_slot_goes_to_the_highest_priority_then_first_come():
    slots: FreeSlots[str] = FreeSlots()
    got: list[tuple[str, str]] = []
    tasks = await queued(
        slots,
        ("ingest-1", INGEST),
        ("ingest-2", INGEST),
        ("upload-1", UPLOAD),
        ("scan", kinds.INGEST_SCAN_PRIORITY),
        ("upload-2", UPLOAD),
        got=got,
    )
    for n in range(5):
        slots.put(f"p{n}")
        await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    assert got == [
        ("upload-1", "p0"),
        ("upload-2", "p1"),
        ("scan", "p2"),
        ("ingest-1", "p3"),
        ("ingest-2", "p4"),
    ]
    assert (slots.idle, slots.waiting) == (0, 0)


async def test_a_new_call_does_not_jump_a_waiting_one_when_a_slot_frees():
    slots: FreeSlots[str] = FreeSlots()
    got: list[tuple[str, str]] = []
    (ingest,) = await queued(slots, ("ingest", INGEST), got=got)
    slots.put("p0")  # handed to the waiting call, not left idle for the next comer
    assert slots.idle == 0
    late = asyncio.create_task(waiter(slots, UPLOAD, got, "late-upload"))
    await asyncio.sleep(0)
    await ingest
    assert got == [("ingest", "p0")]
    assert not late.done()
    slots.put("p1")
    await late
    assert got[-1] == ("late-upload", "p1")


async def test_a_cancelled_waiter_takes_no_slot():
    slots: FreeSlots[str] = FreeSlots()
    got: list[tuple[str, str]] = []
    upload, ingest = await queued(slots, ("upload", UPLOAD), ("ingest", INGEST), got=got)
    upload.cancel()
    await asyncio.gather(upload, return_exceptions=True)
    slots.put("p0")
    await ingest
    assert got == [("ingest", "p0")]
    assert (slots.idle, slots.waiting) == (0, 0)


async def test_a_slot_handed_to_a_call_cancelled_before_it_resumed_is_passed_on():
    slots: FreeSlots[str] = FreeSlots()
    got: list[tuple[str, str]] = []
    upload, ingest = await queued(slots, ("upload", UPLOAD), ("ingest", INGEST), got=got)
    slots.put("p0")  # the upload's future holds p0 ...
    upload.cancel()  # ... but its task is cancelled before it runs again
    await asyncio.gather(upload, return_exceptions=True)
    await ingest
    assert got == [("ingest", "p0")]
    slots.put("p0")
    assert (slots.idle, slots.waiting) == (1, 0)


async def test_a_free_place_goes_to_the_least_loaded_slot():
    """Two places per process: the next call takes a place on the process with the fewest
    calls, whichever place was freed last."""
    load = {"p1": 1, "p2": 0}
    slots: FreeSlots[str] = FreeSlots(load=load.__getitem__)
    for place in ("p2", "p2", "p1"):  # p1 has one call, so one free place
        slots.put(place)
    assert await slots.get(UPLOAD) == "p2"
    load["p2"] = 1
    load["p1"] = 0  # p1's call ended meanwhile
    assert await slots.get(INGEST) == "p1"
    assert slots.idle == 1
