"""Handlers by job kind, and the context a handler runs with."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import Executor
from typing import TYPE_CHECKING, ParamSpec, TypeVar

from mediajobs.errors import JobCancelled, LeaseLost
from mediajobs.queue.models import JSON, Job

if TYPE_CHECKING:
    from mediajobs.queue.queue import JobQueue

P = ParamSpec("P")
R = TypeVar("R")


class JobContext:
    """What a handler gets besides its job: progress, cancellation, and executors for
    work that must not run on the event loop."""

    def __init__(
        self,
        job: Job,
        *,
        queue: JobQueue,
        worker_name: str,
        thread_pool: Executor | None = None,
        process_pool: Callable[[], Executor] | None = None,
    ) -> None:
        self.job = job
        self.worker_name = worker_name
        self._queue = queue
        self._thread_pool = thread_pool
        self._process_pool = process_pool
        self._cancel_requested = job.cancel_requested
        self._lease_lost = False

    @property
    def cancel_requested(self) -> bool:
        """True once someone asked this job to stop; poll it between steps."""
        return self._cancel_requested

    @property
    def lease_lost(self) -> bool:
        """True once this attempt no longer holds the job; its writes will be refused."""
        return self._lease_lost

    def request_cancel(self) -> None:
        self._cancel_requested = True

    def mark_lease_lost(self) -> None:
        self._lease_lost = True

    def raise_if_cancelled(self) -> None:
        """Raise ``JobCancelled`` (or ``LeaseLost``) when the handler should stop now."""
        if self._lease_lost:
            raise LeaseLost(f"job {self.job.id} attempt {self.job.attempt} lost its lease")
        if self._cancel_requested:
            raise JobCancelled(f"job {self.job.id} was cancelled")

    async def progress(self, fraction: float, message: str | None = None) -> None:
        """Record real progress (0..1) on the job; raises ``LeaseLost`` when fenced out."""
        if self._lease_lost:
            raise LeaseLost(f"job {self.job.id} attempt {self.job.attempt} lost its lease")
        if await self._queue.set_progress(self.job, fraction, message):
            self._cancel_requested = True

    async def run_in_thread(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Run blocking I/O or GIL-releasing work in the worker's thread pool."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread_pool, functools.partial(fn, *args, **kwargs))

    async def run_in_process(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Run CPU-bound work in the worker's process pool (``fn`` must be picklable)."""
        if self._process_pool is None:
            return await self.run_in_thread(fn, *args, **kwargs)
        loop = asyncio.get_running_loop()
        call = functools.partial(fn, *args, **kwargs)
        return await loop.run_in_executor(self._process_pool(), call)


Handler = Callable[[JobContext, Job], Awaitable[JSON]]


class HandlerRegistry:
    """Maps a job kind (``media.process``) to its async handler ``handler(ctx, job)``."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    def register(self, kind: str, handler: Handler) -> None:
        if not kind or kind != kind.strip():
            raise ValueError(f"invalid job kind {kind!r}")
        if kind in self._handlers:
            raise ValueError(f"a handler for {kind!r} is already registered")
        self._handlers[kind] = handler

    def handler(self, kind: str) -> Callable[[Handler], Handler]:
        """Decorator form of ``register``."""

        def decorate(fn: Handler) -> Handler:
            self.register(kind, fn)
            return fn

        return decorate

    def select(self, kinds: Sequence[str] | None = None) -> list[str]:
        """The kinds a worker should claim: ``kinds`` (all registered when None or empty).
        Raises ``ValueError`` for a kind without a handler, or when nothing is registered."""
        requested = list(kinds) if kinds else self.kinds
        unknown = sorted(set(requested) - set(self._handlers))
        if unknown:
            raise ValueError(f"no handler registered for kinds: {', '.join(unknown)}")
        if not requested:
            raise ValueError("the handler registry is empty: nothing to run")
        return sorted(requested)

    def get(self, kind: str) -> Handler | None:
        return self._handlers.get(kind)

    @property
    def kinds(self) -> list[str]:
        return sorted(self._handlers)

    def __contains__(self, kind: object) -> bool:
        return kind in self._handlers

    def __iter__(self) -> Iterator[str]:
        return iter(self.kinds)

    def __len__(self) -> int:
        return len(self._handlers)
