"""Helpers to run workers in tests: in this process, or as real `mediajobs worker` processes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

from mediajobs.db import Pool, open_pool
from mediajobs.queue import HandlerRegistry, JobQueue, Worker, WorkerOptions
from tests.support.waiting import wait_for as wait_for  # the tests import it from here too

REPO = Path(__file__).resolve().parents[2]
SUPPORT_APP = "tests.support.handlers:build_registry"


@contextlib.asynccontextmanager
async def queue_pool(database_url: str, max_size: int = 8) -> AsyncIterator[Pool]:
    pool = await open_pool(database_url, name="test", min_size=1, max_size=max_size)
    try:
        yield pool
    finally:
        await pool.close()


@contextlib.asynccontextmanager
async def running_worker(
    queue: JobQueue, registry: HandlerRegistry, database_url: str, **options: object
) -> AsyncIterator[Worker]:
    """A worker running on this event loop until the block ends."""
    worker = Worker.for_postgres(
        queue,
        registry,
        conninfo=database_url,
        options=WorkerOptions(**options),  # type: ignore[arg-type]
    )
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(worker.notifier.connected.wait(), timeout=10)
    try:
        yield worker
    finally:
        worker.stop()
        await asyncio.wait_for(task, timeout=30)


# What makes coverage's start-up hook (a .pth file) measure a child process in `make test`.
COVERAGE_VARIABLES = ("COVERAGE_PROCESS_CONFIG", "COVERAGE_PROCESS_START")


def worker_env(database_url: str, *, coverage: bool = True, **extra: str) -> dict[str, str]:
    """The environment of a worker process; ``coverage=False`` leaves it unmeasured."""
    drop = ("MEDIAJOBS_",) if coverage else ("MEDIAJOBS_", *COVERAGE_VARIABLES)
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(
        DATABASE_URL=database_url,
        PYTHONPATH=str(REPO),
        MEDIAJOBS_ENV="test",
        MEDIAJOBS_LOG_LEVEL="WARNING",
    )
    env.update(extra)
    return env


class WorkerProcess:
    """`mediajobs worker --app tests.support...` as a real process; output kept for asserts."""

    def __init__(
        self,
        database_url: str,
        *args: str,
        env: Mapping[str, str] | None = None,
        coverage: bool = True,
    ):
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "mediajobs", "worker", "--app", SUPPORT_APP, *args],
            env=worker_env(database_url, coverage=coverage, **(env or {})),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group, children included
        )
        self.stdout = ""
        self.stderr = ""

    def send(self, sig: int) -> None:
        self.popen.send_signal(sig)

    async def finish(self, timeout: float = 60) -> int:
        """Wait for the exit; collect output; return the exit code."""
        out, err = await asyncio.to_thread(self.popen.communicate, timeout=timeout)
        self.stdout, self.stderr = out.decode(), err.decode()
        return self.popen.returncode

    async def kill_group(self) -> int:
        """SIGKILL the worker and every process it started (its imaging pool) at once."""
        os.killpg(self.popen.pid, signal.SIGKILL)
        return await self.finish()

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.popen.poll() is None:
            self.send(sig)
        return await self.finish(timeout)

    @property
    def stats(self) -> dict[str, int]:
        """The worker's closing stats line (JSON), printed on exit."""
        stats: dict[str, int] = json.loads(self.stdout.strip().splitlines()[-1])
        return stats


def start_worker_process(
    database_url: str,
    *args: str,
    env: Mapping[str, str] | None = None,
    coverage: bool = True,
) -> WorkerProcess:
    return WorkerProcess(database_url, *args, env=env, coverage=coverage)


def read_lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []
