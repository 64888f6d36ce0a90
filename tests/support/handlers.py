"""Handlers that tests run in real worker processes (`mediajobs worker --app ...`).

Each writes one line per event to the file named by the job's payload ``log``, with
O_APPEND so lines from concurrent processes never interleave.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from mediajobs.handlers import WorkerResources
from mediajobs.queue import HandlerRegistry, Job, JobContext


def append_line(path: str, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


async def record(ctx: JobContext, job: Job) -> Any:
    """Writes `<job id> <attempt> <pid>` and returns."""
    append_line(job.payload["log"], f"{job.id} {job.attempt} {os.getpid()}")
    return {"pid": os.getpid()}


async def sleepy(ctx: JobContext, job: Job) -> Any:
    """Writes `start <id> <attempt> <pid>`, then on its first attempt sleeps
    `first_attempt_seconds` (stopping early when cancelled), then writes `done ...`."""
    log = job.payload["log"]
    append_line(log, f"start {job.id} {job.attempt} {os.getpid()}")
    if job.attempt == 1:
        deadline = asyncio.get_running_loop().time() + job.payload["first_attempt_seconds"]
        while asyncio.get_running_loop().time() < deadline:
            ctx.raise_if_cancelled()
            await asyncio.sleep(0.02)
    append_line(log, f"done {job.id} {job.attempt} {os.getpid()}")
    return {"attempt": job.attempt}


HOLD_LIMIT = 60.0  # seconds a held job waits for its file before it fails


async def steps(ctx: JobContext, job: Job) -> Any:
    """Reports progress ``steps`` times, ``delay`` seconds apart (``pad`` characters of
    message each, to make events large), then returns ``{"steps": n}``. With ``hold_at``
    and ``hold_file``, it stops after that many reports until the file exists: a test puts
    something "mid-job" there, whatever the machine's speed."""
    n = int(job.payload.get("steps", 10))
    delay = float(job.payload.get("delay", 0.0))
    pad = "x" * int(job.payload.get("pad", 0))
    hold_at = job.payload.get("hold_at")
    for i in range(n):
        if i == hold_at:
            await wait_for_file(job.payload["hold_file"])
        ctx.raise_if_cancelled()
        await ctx.progress((i + 1) / n, f"step {i + 1} of {n}{pad}")
        if delay:
            await asyncio.sleep(delay)
    return {"steps": n}


async def wait_for_file(path: str) -> None:
    deadline = asyncio.get_running_loop().time() + HOLD_LIMIT
    while not await asyncio.to_thread(os.path.exists, path):
        if asyncio.get_running_loop().time() > deadline:
            raise RuntimeError(f"{path} did not appear within {HOLD_LIMIT:g} s")
        await asyncio.sleep(0.02)


def build_registry(resources: WorkerResources) -> HandlerRegistry:
    registry = HandlerRegistry()
    registry.register("test.record", record)
    registry.register("test.sleepy", sleepy)
    registry.register("test.steps", steps)
    return registry
