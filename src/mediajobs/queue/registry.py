"""Handlers by job kind, and the context a handler runs with."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Generic

from mediajobs.errors import JobCancelled, LeaseLost
from mediajobs.queue.base import QueueBackend
from mediajobs.queue.models import Job
from mediajobs.types import JSON

if TYPE_CHECKING:
    # A bare ``JobContext`` in a handler's signature means ``JobContext[JobQueue]``: the
    # handlers of this platform run on Postgres. typing.TypeVar takes a default only from
    # Python 3.13 on; the checker reads typing_extensions' (bundled with it).
    from typing_extensions import TypeVar

    from mediajobs.queue.queue import JobQueue

    QueueT = TypeVar("QueueT", bound=QueueBackend, default=JobQueue, covariant=True)
else:
    from typing import TypeVar

    QueueT = TypeVar("QueueT", bound=QueueBackend, covariant=True)

log = logging.getLogger(__name__)


class JobContext(Generic[QueueT]):
    """What a handler gets besides its job: the queue it came from, progress and
    cancellation. (CPU-bound work has
    its own pools: the media handlers' imaging processes.)

    Progress is throttled: the first report is written at once, later ones at most every
    ``progress_interval`` seconds (the newest value wins), a report of 1.0 at once, and the
    last pending one before the job completes. So a handler may report as often as it
    likes without flooding Postgres, Redis or browsers."""

    def __init__(
        self,
        job: Job,
        *,
        queue: QueueT,
        worker_name: str,
        progress_interval: float = 0.0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.job = job
        self.worker_name = worker_name
        self._queue = queue
        self._cancel_requested = job.cancel_requested
        self._lease_lost = False
        self._progress_interval = progress_interval
        self._progress_lock = asyncio.Lock()
        self._progress_written_at: float | None = None
        self._progress_pending: tuple[float, str | None, int] | None = None
        self._progress_seq = 0  # reports made; a write older than the last written is dropped
        self._progress_written_seq = 0
        self._progress_timer: asyncio.TimerHandle | None = None
        self._progress_flush: asyncio.Task[None] | None = None
        self._clock = clock  # monotonic seconds; the event loop's time unless a test injects one
        self.log_fields: dict[str, str] = {}  # what the worker's outcome log names

    @property
    def queue(self) -> QueueT:
        """The queue this job came from (its pool serves the handler's own queries, and
        follow-up jobs are enqueued through it)."""
        return self._queue

    @property
    def cancel_requested(self) -> bool:
        """True once someone asked this job to stop; poll it between steps."""
        return self._cancel_requested

    @property
    def lease_lost(self) -> bool:
        """True once this attempt no longer holds the job; its writes will be refused."""
        return self._lease_lost

    def describe(self, **fields: str | None) -> None:
        """Name what this job works on (``mediaId=..., fileName=...``) for the worker's log
        line about its outcome, so a failure says which item it was. None values are
        skipped."""
        self.log_fields.update({key: value for key, value in fields.items() if value is not None})

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
        """Report real progress (0..1) on the job (throttled, see the class docstring);
        raises ``LeaseLost`` when fenced out."""
        if self._lease_lost:
            raise LeaseLost(f"job {self.job.id} attempt {self.job.attempt} lost its lease")
        if not 0.0 <= fraction <= 1.0:
            raise ValueError("progress must be between 0 and 1")
        loop = asyncio.get_running_loop()
        now = self._now()
        self._progress_seq += 1
        written = self._progress_written_at
        due = 0.0 if written is None else written + self._progress_interval
        if fraction >= 1.0 or now >= due:
            self._progress_pending = None
            await self._write_progress(fraction, message, self._progress_seq)
            return
        self._progress_pending = (fraction, message, self._progress_seq)
        if self._progress_timer is None:
            self._progress_timer = loop.call_later(due - now, self._flush_later)

    async def flush_progress(self) -> None:
        """Write the pending (throttled) progress report now; the worker calls this when
        the handler returns, so the last report is never lost."""
        self._cancel_timer()
        if self._progress_flush is not None:
            await asyncio.gather(self._progress_flush, return_exceptions=True)
        pending, self._progress_pending = self._progress_pending, None
        if pending is not None and not self._lease_lost:
            await self._write_progress(*pending)

    def discard_progress(self) -> None:
        """Drop a pending report (the job failed or was cancelled)."""
        self._cancel_timer()
        self._progress_pending = None

    def _now(self) -> float:
        return self._clock() if self._clock else asyncio.get_running_loop().time()

    def _cancel_timer(self) -> None:
        if self._progress_timer is not None:
            self._progress_timer.cancel()
            self._progress_timer = None

    def _flush_later(self) -> None:
        self._progress_timer = None
        pending, self._progress_pending = self._progress_pending, None
        if pending is not None and not self._lease_lost:
            self._progress_flush = asyncio.get_running_loop().create_task(
                self._write_progress_quietly(*pending)
            )

    async def _write_progress_quietly(self, fraction: float, message: str | None, seq: int) -> None:
        try:
            await self._write_progress(fraction, message, seq)
        except LeaseLost:
            pass  # the handler learns it at its next call
        except Exception as exc:
            log.warning("progress of job %s not written (%s)", self.job.id, exc)

    async def _write_progress(self, fraction: float, message: str | None, seq: int) -> None:
        async with self._progress_lock:
            if seq <= self._progress_written_seq:
                return  # a newer report was written meanwhile
            self._progress_written_seq = seq
            self._progress_written_at = self._now()
            try:
                cancel = await self._queue.set_progress(self.job, fraction, message)
            except LeaseLost:
                self._lease_lost = True
                raise
        if cancel:
            self._cancel_requested = True


# A handler may be written for one queue (``JobContext[JobQueue]``, the default) or for any.
Handler = Callable[[JobContext[Any], Job], Awaitable[JSON]]


class HandlerRegistry:
    """Maps a job kind (``media.process``) to its async handler ``handler(ctx, job)``."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}
        self._closers: list[Callable[[], Awaitable[None]]] = []

    def on_close(self, closer: Callable[[], Awaitable[None]]) -> None:
        """Release a resource the handlers hold (a process pool, clients) when the worker
        that runs them shuts down."""
        self._closers.append(closer)

    async def aclose(self) -> None:
        closers, self._closers = self._closers, []
        for closer in reversed(closers):
            try:
                await closer()
            except Exception:
                log.exception("closing a handler resource failed")

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
