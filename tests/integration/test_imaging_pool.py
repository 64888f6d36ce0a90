"""The imaging process pool: the memory cap, the time limit and step reports, with real
child processes."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import time
from collections.abc import AsyncIterator

import pytest
from PIL import Image

from mediajobs.handlers import imaging_pool
from mediajobs.handlers.imaging_pool import (
    ImagingCrashed,
    ImagingFailed,
    ImagingOutOfMemory,
    ImagingPool,
    ImagingTimeout,
    PoolOptions,
)
from mediajobs.imaging import ImagePolicy
from mediajobs.queue import kinds
from tests.support.images import encode, jpeg, quadrants
from tests.support.waiting import wait_for

pytestmark = pytest.mark.timeout(120)


async def small_image_works(pool: ImagingPool) -> None:
    result = await pool.process(
        jpeg(quadrants()), ImagePolicy(), declared_type="image/jpeg", filename="a.jpg"
    )
    assert result.width == 800


@contextlib.asynccontextmanager
async def one_process() -> AsyncIterator[tuple[ImagingPool, int]]:
    """A pool of one process taking two calls at once, that process started (its spawn
    and imports are no test's time): the pool and the process' pid; closed after."""
    pool = ImagingPool(PoolOptions(processes=1, timeout=60, depth=2))
    try:
        yield pool, await pool.run(os.getpid)
    finally:
        pool.close()


async def test_an_image_over_the_memory_cap_fails_alone_and_the_pool_goes_on() -> None:
    # 80 megapixels of one colour: a 250 KB PNG that needs ~240 MB to decode.
    huge = encode(Image.new("RGB", (10_000, 8_000), (10, 200, 30)), "PNG")
    policy = ImagePolicy(max_megapixels=100, max_bytes=1 << 30)
    pool = ImagingPool(PoolOptions(processes=1, memory_limit=300 << 20))
    try:
        with pytest.raises(ImagingOutOfMemory):
            await pool.process(huge, policy, declared_type=None, filename=None)
        await small_image_works(pool)
    finally:
        pool.close()


async def test_an_image_past_the_time_limit_is_stopped_and_its_process_replaced() -> None:
    # The limit is for the work: a fresh process's start-up (spawn, imports) can take most of
    # 0.5 s on a loaded machine, so the process is started (under a realistic limit) first,
    # and so is its replacement.
    pool = ImagingPool(PoolOptions(processes=1, timeout=60))
    try:
        first = await pool.run(os.getpid)
        pool.options = dataclasses.replace(pool.options, timeout=0.5)
        started = time.monotonic()
        with pytest.raises(ImagingTimeout):
            await pool.run(time.sleep, 30)
        assert time.monotonic() - started < 5  # stopped, not waited for (the sleep is 30 s)
        pool.options = dataclasses.replace(pool.options, timeout=60)
        assert await pool.run(os.getpid) != first  # a new process took the stopped one's place
        await small_image_works(pool)
    finally:
        pool.close()


async def test_steps_are_reported_from_the_child_as_they_happen() -> None:
    steps: list[tuple[str, str | None]] = []
    pool = ImagingPool(PoolOptions(processes=1))
    try:
        await pool.process(
            jpeg(quadrants(3000, 2000)),
            ImagePolicy(),
            declared_type=None,
            filename=None,
            on_step=lambda step, name: steps.append((step, name)),
        )
    finally:
        pool.close()
    assert steps[0] == ("decoded", None)
    assert sorted(name for step, name in steps[1:] if step == "variant") == sorted(
        ["thumb", "card", "preview", "detail", "detail_xl"]
    )


async def test_an_image_alone_gets_every_core_and_a_busy_pool_shares_them() -> None:
    cores = os.cpu_count() or 1
    pool = ImagingPool(PoolOptions(processes=2))
    try:
        # max(0, threads) hands back the thread count the pool chose for the call.
        assert await pool.run(max, 0, pass_threads=True) == cores
        both = await asyncio.gather(*(pool.run(max, 0, pass_threads=True) for _ in range(2)))
        assert sorted(both) == sorted([cores, max(1, cores // 2)])
    finally:
        pool.close()


async def test_a_waiting_call_of_higher_priority_gets_the_next_free_place() -> None:
    """One process, busy with one call and holding the next (depth 2): the ingest calls
    that wait go after an upload that came later (priority 0 over
    kinds.INGEST_BATCH_PRIORITY), and in their own order among themselves. With one
    process, the order calls finish in is the order they ran in."""
    finished: list[str] = []

    async def call(name: str, seconds: float, priority: int) -> None:
        await pool.run(time.sleep, seconds, priority=priority)
        finished.append(name)

    async with one_process() as (pool, _):
        running = asyncio.create_task(call("running", 1.0, kinds.INGEST_BATCH_PRIORITY))
        queued = asyncio.create_task(call("queued", 0.01, kinds.INGEST_BATCH_PRIORITY))
        await wait_for(lambda: pool.busy == 2, timeout=10, interval=0.001)
        assert pool.waiting == 0  # the second call was given to the process at once
        waiting = []
        for name, priority in [
            ("ingest-1", kinds.INGEST_BATCH_PRIORITY),
            ("ingest-2", kinds.INGEST_BATCH_PRIORITY),
            ("upload", 0),
        ]:
            waiting.append(asyncio.create_task(call(name, 0.01, priority)))
            await wait_for(lambda: pool.waiting == len(waiting), timeout=10, interval=0.001)
        assert not running.done()  # every call above queued while the process was busy
        await asyncio.gather(running, queued, *waiting)
    assert finished == ["running", "queued", "upload", "ingest-1", "ingest-2"]


async def test_a_free_place_goes_to_the_process_with_the_fewest_calls() -> None:
    pool = ImagingPool(PoolOptions(processes=2, timeout=60, depth=2))
    try:
        # Two calls at once: one per process (the second does not queue behind the first).
        pids = await asyncio.gather(*(pool.run(_sleep_then_pid, 0.5) for _ in range(2)))
        assert len(set(pids)) == 2
        busy = asyncio.create_task(pool.run(time.sleep, 2.0))
        await wait_for(lambda: pool.busy == 1, timeout=10, interval=0.001)
        started = time.monotonic()
        await pool.run(os.getpid)  # the idle process, not the place behind `busy`
        assert time.monotonic() - started < 1.5
        assert not busy.done()
        await busy
    finally:
        pool.close()


def _sleep_then_exit(seconds: float) -> None:
    time.sleep(seconds)
    os._exit(9)


def _sleep_then_pid(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


async def test_a_call_queued_behind_one_that_crashes_runs_in_the_replacement() -> None:
    """The process dies (SIGKILL, as from the OOM killer) in the call it runs: that call
    fails as a crash; the call queued behind it was never begun, so it is not one, and it
    runs in the new process."""
    async with one_process() as (pool, first):
        running = asyncio.create_task(pool.run(time.sleep, 30))
        queued = asyncio.create_task(pool.run(os.getpid))
        await wait_for(lambda: pool.busy == 2, timeout=10, interval=0.001)
        await asyncio.sleep(0.2)  # the child has begun the sleep
        os.kill(first, signal.SIGKILL)
        with pytest.raises(ImagingCrashed):
            await running
        second = await queued
        assert second != first
        assert pool.crashes == 1


@pytest.mark.parametrize("stop", ["crash", "timeout"])
async def test_a_move_another_calls_stop_explains_is_free(
    stop: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With one move allowed, a call queued behind a call that crashes (or runs past its
    time) still runs: its move is the other call's doing, so it does not count. (A good
    file queued behind the three crashes of a poison file used to fail as a crash.)"""
    monkeypatch.setattr(imaging_pool, "MAX_MOVES", 1)
    async with one_process() as (pool, first):
        pool.options = dataclasses.replace(pool.options, timeout=1.0)
        for round_ in range(3):
            pid = await pool.run(os.getpid)
            doomed = asyncio.create_task(
                pool.run(_sleep_then_exit, 0.3) if stop == "crash" else pool.run(time.sleep, 30)
            )
            await wait_for(lambda: pool.busy == 1, timeout=10, interval=0.001)
            queued = asyncio.create_task(pool.run(os.getpid))
            with pytest.raises(ImagingCrashed if stop == "crash" else ImagingTimeout):
                await doomed
            assert await queued != pid, round_
        assert pool.crashes == (3 if stop == "crash" else 0)
        assert first != await pool.run(os.getpid)
        # An unexplained stop still counts: a call that kills its process before it begins.
        with pytest.raises(ImagingCrashed, match="before it began"):
            await pool.run(id, _DiesWhenUnpickled())


async def test_a_queued_call_is_timed_from_its_start_and_survives_a_timeout_before_it() -> None:
    async with one_process() as (pool, first):
        pool.options = dataclasses.replace(pool.options, timeout=1.0)
        # 0.7 s each: the second ends 1.4 s after it was given, within its 1 s of work.
        await asyncio.gather(pool.run(time.sleep, 0.7), pool.run(time.sleep, 0.7))
        # The call before it runs past the limit and its process is stopped: the queued
        # call, never begun, runs in the new process (its start-up is not its time).
        stuck = asyncio.create_task(pool.run(time.sleep, 30))
        queued = asyncio.create_task(pool.run(os.getpid))
        with pytest.raises(ImagingTimeout):
            await stuck
        assert await queued != first
        assert pool.crashes == 0


async def test_two_calls_on_one_process_each_get_their_own_steps() -> None:
    steps: dict[str, list[tuple[str, str | None]]] = {"a": [], "b": []}
    pool = ImagingPool(PoolOptions(processes=1, depth=2))

    def image(name: str) -> object:
        return pool.process(
            jpeg(quadrants(1600, 1200)),
            ImagePolicy(),
            declared_type=None,
            filename=None,
            on_step=lambda step, variant: steps[name].append((step, variant)),
        )

    try:
        await asyncio.gather(image("a"), image("b"))
    finally:
        pool.close()
    for name in ("a", "b"):
        assert steps[name][0] == ("decoded", None)
        assert sum(1 for step, _ in steps[name] if step == "decoded") == 1
        assert sum(1 for step, _ in steps[name] if step == "variant") == 5


class _DiesWhenUnpickled:
    """An argument whose unpickling ends the process that unpickles it: a child dies
    before it can report that it began the call (as when a file's bytes overflow its
    memory cap while they are received)."""

    def __reduce__(self) -> tuple[object, tuple[int]]:
        return os._exit, (3,)


async def test_a_call_that_kills_its_process_before_it_begins_fails_after_a_few_moves() -> None:
    pool = ImagingPool(PoolOptions(processes=1, timeout=60, depth=2))
    try:
        with pytest.raises(ImagingCrashed, match="before it began"):
            await pool.run(id, _DiesWhenUnpickled())
        assert pool.crashes == 1
        await small_image_works(pool)
    finally:
        pool.close()


async def test_a_cancelled_queued_call_that_kills_its_process_leaves_a_working_pool() -> None:
    async with one_process() as (pool, first):
        running = asyncio.create_task(pool.run(time.sleep, 0.5))
        queued = asyncio.create_task(pool.run(os._exit, 3))
        await wait_for(lambda: pool.busy == 2, timeout=10, interval=0.001)
        queued.cancel()  # its job was abandoned; the process runs it anyway, and dies
        await running
        await wait_for(lambda: pool.busy == 0 and pool.waiting == 0, timeout=10)
        assert await pool.run(os.getpid) != first


async def test_a_cancelled_queued_call_that_hangs_is_stopped_and_blames_no_one() -> None:
    async with one_process() as (pool, first):
        pool.options = dataclasses.replace(pool.options, timeout=1.0)
        running = asyncio.create_task(pool.run(time.sleep, 0.3))
        stuck = asyncio.create_task(pool.run(time.sleep, 30))
        await wait_for(lambda: pool.busy == 2, timeout=10, interval=0.001)
        stuck.cancel()
        await running
        # Behind the abandoned sleep: stopped after its 1 s, this call moves, unblamed.
        started = time.monotonic()
        assert await pool.run(os.getpid) != first
        assert time.monotonic() - started < 20
        assert pool.crashes == 0


async def test_a_closed_pool_refuses_calls() -> None:
    pool = ImagingPool(PoolOptions(processes=1))
    await pool.run(os.getpid)
    pool.close()
    with pytest.raises(ImagingFailed, match="closed"):
        await pool.run(os.getpid)
