"""Ctrl-C on `mediajobs dev` (what `make dev` runs) while it decodes an upload, and on a
`mediajobs worker` at any moment of its start. The terminal sends SIGINT to the whole
process group; the server, worker and imaging processes stop in order, without a
traceback, and leave no process behind."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import uuid
from typing import IO

import httpx
import psutil
import psycopg
import pytest

from tests.acceptance.test_media_api import ADMIN, put_upload
from tests.conftest import create_database, drop_database, free_port
from tests.support.images import jpeg, photo
from tests.support.processes import alive, descendants, imaging_children
from tests.support.serving import wait_http
from tests.support.sse import bearer, realtime_env
from tests.support.workers import REPO, start_worker_process, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


async def test_ctrl_c_on_mediajobs_dev_while_it_decodes_is_quiet_and_leaves_no_process(
    services, migrated_template
) -> None:
    name = f"site_{uuid.uuid4().hex[:8]}"
    url = create_database(services.pg_admin_url, name, template=migrated_template)
    port = free_port()
    env = {
        **realtime_env(url, services.redis_url),
        "MEDIAJOBS_PORT": str(port),
        "PYTHONPATH": str(REPO),
        "MEDIAJOBS_LOG_LEVEL": "INFO",
        "MEDIAJOBS_SHUTDOWN_GRACE": "120",
    }
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile(mode="w+t") as output:
        dev = start_dev(env, output)
        try:
            job_id = await _decode_then_ctrl_c(base, dev, output)
            with psycopg.connect(url) as conn:
                row = conn.execute("SELECT state FROM jobs WHERE id = %s", (job_id,)).fetchone()
            # One Ctrl-C: the running decode had its grace period and finished.
            assert row == ("succeeded",)
        finally:
            with contextlib.suppress(ProcessLookupError, psutil.Error):
                os.killpg(dev.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                dev.wait(10)
            drop_database(services.pg_admin_url, name)


def start_dev(env: dict[str, str], output: IO[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "mediajobs", "dev"],
        env=env,
        stdout=output,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # a process group of its own, as a terminal's job is
    )


async def _decode_then_ctrl_c(base: str, dev: subprocess.Popen[str], output: IO[str]) -> str:
    """Upload a slow photo, Ctrl-C while it decodes; the job's id once ``dev`` has exited."""
    assert (await asyncio.to_thread(wait_http, f"{base}/healthz", 60)).status_code == 200
    alice = bearer("alice")
    source = jpeg(photo(4000, 3000))
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        # Slow encodes: the image is still in its imaging process at the Ctrl-C.
        policy = await client.put("/v1/admin/site-policies", json={"webpMethod": 6}, headers=ADMIN)
        assert policy.status_code == 200, policy.text
        init = await client.post(
            "/media/upload/init",
            json={"filename": "big.jpg", "contentType": "image/jpeg", "size": len(source)},
            headers=alice,
        )
        assert init.status_code == 200, init.text
        await put_upload(client, init.json(), source)
        done = await client.post(
            "/media/upload/complete",
            json={"objectPath": init.json()["objectPath"]},
            headers=alice,
        )
        assert done.status_code == 202, done.text
    await wait_for(lambda: imaging_children(descendants(dev.pid)), timeout=60, interval=0.05)
    tree = descendants(dev.pid)

    os.killpg(dev.pid, signal.SIGINT)  # Ctrl-C
    code = await asyncio.to_thread(dev.wait, 120)  # a hang guard, not a timing claim
    output.seek(0)
    log = output.read()
    assert code == 0, log[-3000:]
    assert "Traceback" not in log, log[-5000:]
    assert "KeyboardInterrupt" not in log, log[-5000:]
    assert "job failed" not in log, log[-5000:]  # the decode was not killed by Ctrl-C
    assert "back to the queue" not in log, log[-5000:]
    await wait_for(lambda: not alive(tree), timeout=20, interval=0.1)
    return str(done.json()["jobId"])


@pytest.mark.parametrize("after", [0.1, 0.4, 0.8, 1.5, 3.0])
async def test_ctrl_c_at_any_moment_of_a_worker_start_exits_quietly(
    database_url: str, after: float
) -> None:
    # Depending on the moment: before the interpreter handles SIGINT (killed by it, as a
    # shell reports 130), while modules load (exit 130 at once), while it connects, or once
    # it runs (a graceful stop, exit 0). Quiet and prompt in every case.
    # Unmeasured: the moment under test is the interpreter's own start, where coverage's
    # start-up hook (a .pth file with a bare `except`) would swallow the Ctrl-C.
    worker = start_worker_process(
        database_url,
        "--app",
        "mediajobs.handlers:build_registry",
        env={"MEDIAJOBS_LOG_LEVEL": "INFO"},
        coverage=False,
    )
    try:
        await asyncio.sleep(after)
        os.killpg(worker.popen.pid, signal.SIGINT)
        code = await worker.finish(timeout=60)  # a hang guard
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.popen.pid, signal.SIGKILL)
    output = worker.stdout + worker.stderr
    assert code in (0, 130, -signal.SIGINT), output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    assert "KeyboardInterrupt" not in output, output[-3000:]
    if code == 0:
        assert worker.stats["claimed"] == 0  # it ran and stopped in order
