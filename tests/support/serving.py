"""Real `mediajobs` processes for acceptance tests: one-shot commands and `serve`."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import tempfile
import time

import httpx

from tests.conftest import free_port
from tests.support.workers import REPO


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a fresh shell: none of our variables set."""
    drop = ("MEDIAJOBS_", "DATABASE_URL", "REDIS_URL", "GCS_", "S3_", "STORAGE_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(extra)
    return env


def mediajobs(
    *args: str, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mediajobs", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def wait_http(url: str, timeout: float) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return httpx.get(url, timeout=2)
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


class Serving:
    """`mediajobs serve` as a real process, up (healthz answers) inside the block and
    stopped with SIGTERM after it; ``returncode`` and ``output`` are set then."""

    def __init__(
        self,
        env: dict[str, str],
        *,
        port: int | None = None,
        command: str = "serve",
        open_files: tuple[int, int] | None = None,
    ) -> None:
        self.command = command  # "serve", or "dev" (API and worker in one process)
        self.open_files = open_files  # (soft, hard) RLIMIT_NOFILE the process starts with
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self._env = {**env, "MEDIAJOBS_PORT": str(self.port), "PYTHONPATH": str(REPO)}
        self.returncode: int | None = None
        self.output = ""

    def __enter__(self) -> Serving:
        # Output goes to a file, not a pipe: a busy server would fill a pipe nobody reads
        # until exit and then block on its next log line.
        self._log = tempfile.TemporaryFile(mode="w+t")
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "mediajobs", self.command],
            env=self._env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            text=True,
            preexec_fn=self._limits if self.open_files else None,
        )
        self.pid = self._proc.pid
        try:
            assert wait_http(f"{self.base}/healthz", 30).status_code == 200
        except BaseException:
            self.__exit__()
            raise
        return self

    def _limits(self) -> None:  # in the child, before exec
        assert self.open_files is not None
        resource.setrlimit(resource.RLIMIT_NOFILE, self.open_files)

    def log_so_far(self) -> str:
        """The output until now (pread: the shared file offset the server writes at stays)."""
        fd = self._log.fileno()
        return os.pread(fd, os.fstat(fd).st_size, 0).decode(errors="replace")

    def __exit__(self, *exc: object) -> None:
        self._proc.send_signal(signal.SIGTERM)
        try:
            self._proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            log = self.log_so_far()
            self._proc.kill()  # never left running, nor its log file open, after a failure
            self._proc.wait()
            self._log.close()
            raise AssertionError(
                f"the server did not stop within 30 s of SIGTERM; its log ends:\n{log[-6000:]}"
            ) from None
        self.returncode = self._proc.returncode
        self._log.seek(0)
        self.output = self._log.read()
        self._log.close()
