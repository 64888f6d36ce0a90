"""Child processes that die with their parent and leave Ctrl-C to it.

A worker runs CPU-bound work (image decodes) in ``spawn``-ed child processes. Two things
must hold whatever happens to the worker:

- **The children die with it.** A SIGKILLed or OOM-killed worker runs no cleanup, and its
  children would be re-parented to PID 1 and live on (each with its decoder's memory), and
  with them multiprocessing's resource tracker, which exits only once every holder of its
  pipe (the children inherit it) has closed it. On Linux each child asks the kernel for
  SIGKILL when its parent goes (``prctl(PR_SET_PDEATHSIG)``, prctl(2)); everywhere, a
  thread in the child also watches its parent's pid and ends the child when it changes
  (the portable fallback, within ``PARENT_POLL`` seconds). The kernel's signal follows the
  *thread* that started the child: here the caller of ``submit`` (the event loop's thread)
  or the executor's manager thread (replacement children), which both live as long as the
  pool, so it fires only when the children should go anyway.
- **Ctrl-C is the parent's.** A terminal sends SIGINT to the whole process group; the
  parent shuts down in order (the worker's grace period), so the children ignore SIGINT
  instead of each printing a ``KeyboardInterrupt`` traceback. A child starts with SIGINT
  blocked (the signal mask survives fork and exec, the technique of CPython's own resource
  tracker, bpo-33613), so a Ctrl-C while it is still starting cannot interrupt it either.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from multiprocessing import resource_tracker
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")

PARENT_POLL = 0.5  # seconds between the watcher thread's looks at the parent pid
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class ChildProcessPool(ProcessPoolExecutor):
    """A ``ProcessPoolExecutor`` whose children die with this process and ignore SIGINT
    (see the module docstring). Takes ``ProcessPoolExecutor``'s arguments; its own
    ``initializer`` runs in each child after the binding."""

    def __init__(
        self,
        max_workers: int | None = None,
        mp_context: Any = None,
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
        *,
        max_tasks_per_child: int | None = None,
    ) -> None:
        super().__init__(
            max_workers=max_workers,
            mp_context=mp_context,
            initializer=bind_to_parent,
            initargs=(os.getpid(), initializer, initargs),
            max_tasks_per_child=max_tasks_per_child,
        )

    def submit(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> Future[R]:
        # Children are started here, on demand; and by the executor's manager thread,
        # which is started here too and inherits this thread's signal mask.
        with sigint_blocked():
            return super().submit(fn, *args, **kwargs)


@contextlib.contextmanager
def sigint_blocked() -> Iterator[None]:
    """Block SIGINT in this thread while processes it starts inherit the mask. A SIGINT that
    arrives meanwhile stays pending and is handled as soon as the block ends."""
    if not hasattr(signal, "pthread_sigmask"):  # Windows: no process groups to fear
        yield
        return
    # The resource tracker's own launch unblocks SIGINT when it ends (see its source):
    # make sure it runs before the block, not inside it.
    resource_tracker.ensure_running()
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def bind_to_parent(
    parent_pid: int,
    initializer: Callable[..., object] | None = None,
    initargs: tuple[Any, ...] = (),
) -> None:
    """In a child, first thing: ignore SIGINT, die with the parent ``parent_pid`` (kernel
    death signal on Linux, a watcher thread everywhere), then run ``initializer``. Ends the
    child at once when the parent is already gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    if sys.platform == "linux":
        _set_parent_death_signal(signal.SIGKILL)
    # The parent may have died before the death signal was armed.
    if os.getppid() != parent_pid:
        os._exit(1)
    threading.Thread(
        target=_watch_parent, args=(parent_pid,), name="mediajobs-parent-watch", daemon=True
    ).start()
    if initializer is not None:
        initializer(*initargs)


def _set_parent_death_signal(sig: int) -> None:
    """prctl(PR_SET_PDEATHSIG, sig): the kernel sends ``sig`` when the parent exits. Quietly
    does nothing where libc has no prctl (the watcher thread still covers it)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)  # this process's symbols: libc's among them
        libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(PARENT_POLL)
    os._exit(1)  # re-parented: the parent is gone, and so is the reason to run
