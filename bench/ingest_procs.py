"""The processes of ``bench/ingest.py``: ``mediajobs worker`` / ``serve`` / ``ingest`` with
one environment, and a sampler of their memory and CPU (psutil, every 0.2 s)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import psutil

MIB = 1024 * 1024
SAMPLE_INTERVAL = 0.2  # seconds (the brief: psutil every 0.2 s)
# Seconds between looks for each process' descendants: one pass over every process of the
# machine for all the watched ones. (A look per process and sample, psutil's
# ``children(recursive=True)``, cost 3% of this 2-core machine during an ingest: CPU the
# figures then charged to ingest.)
FAMILY_REFRESH = 1.0
# Variables of the caller's shell that would configure the processes started here.
FOREIGN = ("MEDIAJOBS_", "S3_", "GCS_", "STORAGE_", "AWS_", "DATABASE_URL", "REDIS_URL")


def environment(dsn: str, redis_url: str, **extra: str) -> dict[str, str]:
    """The environment of every process of one phase: this shell's, minus its mediajobs
    and storage settings, plus the phase's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN)}
    env.update(
        DATABASE_URL=dsn,
        REDIS_URL=redis_url,
        MEDIAJOBS_ENV="test",
        MEDIAJOBS_LOG_LEVEL="WARNING",
    )
    env.update(extra)
    return env


def mediajobs(
    args: list[str], env: Mapping[str, str], log: Path, *, stdout: int | None = None
) -> subprocess.Popen[bytes]:
    """``python -m mediajobs ARGS`` in its own process group; stderr (and stdout unless
    piped) to ``log``."""
    out = log.open("ab")
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "mediajobs", *args],
            env=dict(env),
            stdout=out if stdout is None else stdout,
            stderr=out,
            start_new_session=True,
        )
    finally:
        out.close()  # the child holds its own copy


def stop(proc: subprocess.Popen[bytes], timeout: float = 60.0) -> int:
    """SIGTERM (a worker finishes its jobs and closes its imaging pool), then SIGKILL of
    the process group after ``timeout`` seconds."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode


def vm_hwm_mib(pid: int) -> float | None:
    """A live process's own peak RSS (VmHWM), which a 0.2 s sample can miss."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


@dataclass
class Usage:
    """What the sampler saw of one named process and its descendants."""

    peak_tree_mib: float = 0.0  # the largest sum of RSS over the process and its children
    peak_main_mib: float = 0.0  # the process alone (sampled; VmHWM folded in at the end)
    peak_child_mib: float = 0.0  # the largest single child (an imaging process)
    cpu: dict[int, float] = field(default_factory=dict)  # pid -> last seen CPU seconds
    cpu_at_start: dict[int, float] = field(default_factory=dict)
    main_pid: int = 0

    @property
    def cpu_seconds(self) -> float:
        return sum(self.cpu.values()) - sum(self.cpu_at_start.values())

    @property
    def cpu_main_seconds(self) -> float:
        """The process alone, without its children."""
        return self.cpu.get(self.main_pid, 0.0) - self.cpu_at_start.get(self.main_pid, 0.0)


class Sampler:
    """Samples named processes (each with its descendants) every ``SAMPLE_INTERVAL``: peak
    RSS and CPU seconds. ``watch`` adds one; ``close`` stops and folds in each main
    process's VmHWM."""

    def __init__(self) -> None:
        self.usage: dict[str, Usage] = {}
        self._procs: dict[str, psutil.Process] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self._thread.start()

    def watch(self, name: str, pid: int) -> None:
        with self._lock:
            self._procs[name] = psutil.Process(pid)
            self.usage.setdefault(name, Usage(main_pid=pid))
        self._sample(name, self._procs[name], start=True)

    def forget(self, name: str) -> None:
        """Stop sampling ``name`` (call before stopping it), keeping what was seen."""
        with self._lock:
            proc = self._procs.pop(name, None)
        if proc is not None:
            self._sample(name, proc)
            hwm = vm_hwm_mib(proc.pid)
            usage = self.usage[name]
            if hwm is not None:
                usage.peak_main_mib = max(usage.peak_main_mib, hwm)

    def close(self) -> dict[str, Usage]:
        for name in list(self._procs):
            self.forget(name)
        self._stop.set()
        self._thread.join(timeout=5)
        return self.usage

    def _run(self) -> None:
        families: dict[int, list[psutil.Process]] = {}
        refreshed = float("-inf")
        while not self._stop.wait(SAMPLE_INTERVAL):
            with self._lock:
                procs = list(self._procs.items())
            if time.monotonic() - refreshed >= FAMILY_REFRESH:
                families = descendants({proc.pid for _, proc in procs})
                refreshed = time.monotonic()
            for name, proc in procs:
                self._sample(name, proc, families.get(proc.pid))

    def _sample(
        self,
        name: str,
        proc: psutil.Process,
        descendants: list[psutil.Process] | None = None,
        *,
        start: bool = False,
    ) -> None:
        """One sample of ``proc`` and ``descendants`` (None: looked up now)."""
        usage = self.usage[name]
        try:
            if descendants is None:
                descendants = proc.children(recursive=True)
            family = [proc, *descendants]
        except psutil.Error:
            return
        total = 0.0
        for member in family:
            try:
                with member.oneshot():
                    rss = member.memory_info().rss / MIB
                    times = member.cpu_times()
            except psutil.Error:
                continue
            total += rss
            if member.pid == proc.pid:
                usage.peak_main_mib = max(usage.peak_main_mib, rss)
            else:
                usage.peak_child_mib = max(usage.peak_child_mib, rss)
            cpu = times.user + times.system
            usage.cpu[member.pid] = cpu
            if start:
                usage.cpu_at_start.setdefault(member.pid, cpu)
        usage.peak_tree_mib = max(usage.peak_tree_mib, total)


def descendants(roots: set[int]) -> dict[int, list[psutil.Process]]:
    """Each of ``roots``' descendants now, from one pass over the machine's processes."""
    children: dict[int, list[psutil.Process]] = {}
    for proc in psutil.process_iter(["ppid"]):
        children.setdefault(proc.info["ppid"], []).append(proc)
    found: dict[int, list[psutil.Process]] = {}
    for root in roots:
        family, todo = [], [root]
        while todo:
            for child in children.get(todo.pop(), []):
                family.append(child)
                todo.append(child.pid)
        found[root] = family
    return found


def postmaster_pid() -> int | None:
    """The local Postgres server's main process (its children are the backends), or None
    when Postgres does not run on this machine."""
    for proc in psutil.process_iter(["name", "ppid"]):
        if proc.info["name"] == "postgres":
            with contextlib.suppress(psutil.Error):
                parent = psutil.Process(proc.info["ppid"])
                if parent.name() != "postgres":
                    return proc.pid
    return None


def cpu_snapshot(pid: int) -> dict[int, float]:
    """CPU seconds of a process and of each of its children now, by pid."""
    snapshot: dict[int, float] = {}
    with contextlib.suppress(psutil.Error):
        root = psutil.Process(pid)
        for member in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                times = member.cpu_times()
                snapshot[member.pid] = times.user + times.system
    return snapshot


def cpu_between(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds spent between two snapshots by the processes alive at the second (a
    process that ended in between is not counted)."""
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


@contextlib.contextmanager
def sampling() -> Iterator[Sampler]:
    sampler = Sampler()
    try:
        yield sampler
    finally:
        sampler.close()


def wait_until(predicate: object, timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll ``predicate()`` until true; RuntimeError naming ``what`` after ``timeout``."""
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")
