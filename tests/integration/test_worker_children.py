"""A real `mediajobs worker` busy with media jobs, and its child processes (the imaging
processes and multiprocessing's resource tracker): they die with the worker however it
ends, and Ctrl-C on its terminal stops it quietly."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator

import psutil
import pytest

from mediajobs.queue import JobState
from tests.integration.test_media_handlers import s3_worker_env
from tests.support.emulators import s3_store
from tests.support.images import jpeg, photo
from tests.support.media import MediaEnv, media_env
from tests.support.processes import (
    alive,
    cmdline,
    descendants,
    imaging_children,
    resource_trackers,
)
from tests.support.workers import WorkerProcess, start_worker_process, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

APP = ("--app", "mediajobs.handlers:build_registry")


@contextlib.asynccontextmanager
async def busy_worker(
    database_url: str, redis_url: str, moto_url: str, *, images: int = 2
) -> AsyncIterator[tuple[MediaEnv, WorkerProcess, list[psutil.Process]]]:
    """A worker process with two imaging processes, decoding ``images`` large photos;
    yields it with its descendants as they were while busy. Whatever is left of the
    process group is killed after the block."""
    store = await asyncio.to_thread(s3_store, moto_url)
    env_vars = {**s3_worker_env(moto_url, store.bucket, redis_url)}
    env_vars["MEDIAJOBS_IMAGING_PROCESSES"] = "2"
    env_vars["MEDIAJOBS_LOG_LEVEL"] = "INFO"
    worker: WorkerProcess | None = None
    try:
        async with media_env(database_url, redis_url, store, worker=False) as env:
            await env.policies.update({"webp_method": 6})  # slow encodes: busy for a while
            jobs = [
                (await env.upload(jpeg(photo(4000, 3000)), f"big{i}.jpg"))[1] for i in range(images)
            ]
            worker = start_worker_process(database_url, *APP, env=env_vars)
            pid = worker.popen.pid

            async def busy() -> bool:
                running = [await env.queue.get(job_id) for job_id in jobs]
                decoding = sum(1 for j in running if j and j.state is JobState.RUNNING)
                tree = descendants(pid)
                return decoding >= 1 and len(imaging_children(tree)) >= 1

            await wait_for(busy, timeout=60, interval=0.05)
            tree = descendants(pid)
            yield env, worker, tree
    finally:
        if worker is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(worker.popen.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                await worker.finish(timeout=10)
        await store.close()


async def test_a_sigkilled_busy_worker_takes_its_imaging_processes_and_tracker_with_it(
    database_url: str, redis_url: str, moto_url: str
) -> None:
    async with busy_worker(database_url, redis_url, moto_url) as (_env, worker, tree):
        assert imaging_children(tree), [cmdline(p) for p in tree]
        assert len(resource_trackers(tree)) == 1, [cmdline(p) for p in tree]
        os.kill(worker.popen.pid, signal.SIGKILL)  # the worker only, not its group
        assert await worker.finish(timeout=30) == -signal.SIGKILL
        # Within seconds (a generous hang guard, not a timing claim): nothing is left.
        await wait_for(lambda: not alive(tree), timeout=20, interval=0.1)
        assert alive(tree) == []


async def test_ctrl_c_stops_a_busy_worker_quietly_and_leaves_no_process(
    database_url: str, redis_url: str, moto_url: str
) -> None:
    async with busy_worker(database_url, redis_url, moto_url) as (env, worker, tree):
        assert imaging_children(tree)
        jobs = [job.id for job in await env.queue.for_owner(env.owner)]
        # A terminal's Ctrl-C: SIGINT to every process of the foreground group.
        os.killpg(worker.popen.pid, signal.SIGINT)
        code = await worker.finish(timeout=120)
        output = worker.stdout + worker.stderr
        assert code == 0, output[-3000:]
        assert "Traceback" not in output, output[-5000:]
        assert "KeyboardInterrupt" not in output, output[-5000:]
        assert "stopped" in worker.stderr  # it shut down in order, not by the signal
        # The imaging processes kept working through the Ctrl-C: no job failed of it; each
        # finished within the grace period or was handed back for another worker.
        assert worker.stats["failed"] == 0, output[-3000:]
        states = {(await env.queue.get(job_id)).state for job_id in jobs}  # type: ignore[union-attr]
        assert states <= {JobState.SUCCEEDED, JobState.QUEUED}
        await wait_for(lambda: not alive(tree), timeout=20, interval=0.1)


WATCHED_GRANDCHILD = """
import subprocess, sys
import os
child = subprocess.Popen([sys.executable, "-c", (
    "import sys; from mediajobs.queue.children import _watch_parent; "
    "print('watching', flush=True); _watch_parent(int(sys.argv[1]))"
), str(os.getpid())], stdout=subprocess.PIPE, text=True)
assert child.stdout is not None and child.stdout.readline().strip() == "watching"
print(child.pid, flush=True)
import time; time.sleep(3600)
"""


@pytest.mark.timeout(60)
async def test_without_a_kernel_death_signal_the_watcher_thread_ends_an_orphaned_child() -> None:
    # The portable fallback alone: this child never armed PR_SET_PDEATHSIG.
    parent = await asyncio.create_subprocess_exec(
        sys.executable, "-c", WATCHED_GRANDCHILD, stdout=asyncio.subprocess.PIPE
    )
    assert parent.stdout is not None
    line = await asyncio.wait_for(parent.stdout.readline(), 30)
    child = psutil.Process(int(line))
    assert child.ppid() == parent.pid and child.is_running()
    parent.kill()
    await parent.wait()
    await wait_for(lambda: not alive([child]), timeout=20, interval=0.1)


async def test_a_child_whose_parent_died_before_it_was_bound_exits_at_once() -> None:
    # bind_to_parent is told a parent pid that is not its parent's: the parent it was
    # started for is gone (it was re-parented before it got this far).
    code = (
        "import os; from mediajobs.queue.children import bind_to_parent; "
        "bind_to_parent(os.getppid() + 100000); print('still here')"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert (proc.returncode, out) == (1, b"")
