"""Process trees of real `mediajobs` processes (psutil): who is a descendant, who is an
imaging process or the resource tracker, and who is still alive."""

from __future__ import annotations

import contextlib

import psutil


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def imaging_children(processes: list[psutil.Process]) -> list[psutil.Process]:
    return [p for p in processes if "--multiprocessing-fork" in cmdline(p)]


def resource_trackers(processes: list[psutil.Process]) -> list[psutil.Process]:
    return [p for p in processes if "resource_tracker" in cmdline(p)]


def cmdline(process: psutil.Process) -> str:
    with contextlib.suppress(psutil.Error):
        return " ".join(process.cmdline())
    return ""


def alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    """The ones still running (a zombie waiting for init to reap it has ended). psutil
    checks the start time too, so a reused pid is not taken for the old process."""
    running = []
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                running.append(process)
    return running
