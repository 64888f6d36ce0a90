"""Where decodes run: child processes a bad image cannot take down the worker with.

Each slot is its own single-process executor with an address-space cap. A decode that
crashes its process (a decoder bug, the kernel's OOM killer) or runs past the timeout costs
only the job it was running: that slot is replaced and every other slot keeps its work.
(One shared ``ProcessPoolExecutor`` would fail every pending task when one child dies.)

Children report steps (decoded, each variant) through a pipe, so the job's progress is real
while the work happens in another process. They die with the worker, however it ends, and
leave Ctrl-C to it (``queue.children``).

Each process is given its next call while it still runs the current one (``PoolOptions.depth``,
2): the call waits in the process' queue, pickled (in the parent: the pipe holds only its
first 64 KiB), and the process begins it the moment it ends the one before. Handing a call
over only once the process was free left it idle for the hand-off (the result back through
the executor's threads and the parent's event loop, the next call out): 6 to 11% of its time
in bulk ingest (``bench/ingest.py``). The price in memory is that pickled copy: one more
source file per process. A call queued behind one that crashes or times out was never
begun: it goes to the replacement process and is not counted as a crash (after
``MAX_MOVES`` moves that no other call's crash explains, it is). A queued call whose job is
abandoned still runs (it is in the process' queue), with its time limit, and its steps go nowhere.

When every place is taken, calls wait by priority (``run(..., priority=)``): an upload (0)
goes before the ingest batches waiting (``kinds.INGEST_BATCH_PRIORITY``, -10), first come
first served within one priority, and a free place goes to the process with the fewest
calls. The cost of the depth: an upload that arrives while ingest keeps every process busy
waits for the image running and the one queued behind it on its process (at most one more
image than with no queue).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import multiprocessing
import os
import resource
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Generic, TypeVar

from mediajobs.config import Settings
from mediajobs.errors import MediaJobsError
from mediajobs.imaging.catalog import CatalogImage, CatalogProfile, make_catalog
from mediajobs.imaging.pipeline import ProcessedImage, process_image
from mediajobs.imaging.policy import ImagePolicy
from mediajobs.queue.children import ChildProcessPool

log = logging.getLogger(__name__)

R = TypeVar("R")

StepListener = Callable[[str, str | None], None]

_step_pipe: Connection | None = None  # in a child: where steps are reported
_call_id: int | None = None  # in a child: the call it runs
_STARTED = "started"  # the step a child reports as it begins a call
# A call whose process dies before beginning it moves to the replacement; after this many
# such moves that no other call explains (none had begun there and not ended) it fails as a
# crash (a call that kills its process while it is being unpickled, or a process that
# cannot start, must not respawn processes for ever).
MAX_MOVES = 3
# Seconds a queued call waits for its process to begin it beyond the time limits of the
# calls ahead of it: a new process' start-up (spawn, imports; over a second on a loaded
# machine).
START_ALLOWANCE = 60.0


class ImagingFailed(MediaJobsError):
    """The imaging process could not finish this image (not the image's fault, as far as
    anyone can tell); ``code`` says how."""

    code = "imaging_failed"


class ImagingCrashed(ImagingFailed):
    """The imaging process died while working on this job."""

    code = "imaging_crashed"


class ImagingTimeout(ImagingFailed):
    """The imaging process ran past its time limit and was stopped."""

    code = "imaging_timeout"


class ImagingOutOfMemory(ImagingFailed):
    """The image needed more memory than the imaging process may use."""

    code = "imaging_out_of_memory"


@dataclass(frozen=True)
class PoolOptions:
    """How the imaging pool runs; the defaults a deployment sets are ``Settings``' (their
    one home)."""

    processes: int = max(1, os.cpu_count() or 1)  # (MEDIAJOBS_IMAGING_PROCESSES=0: this)
    # Bytes of address space per process; None: no cap.
    memory_limit: int | None = Settings.imaging_memory_mb << 20
    timeout: float = Settings.imaging_timeout  # seconds one image may take
    tasks_per_process: int = 500  # recycle children now and then (heap fragmentation)
    depth: int = 2  # calls given to one process at once: the one it runs, the next ones

    @classmethod
    def from_settings(cls, settings: Settings) -> PoolOptions:
        """The options ``settings`` name (0 processes: one per CPU)."""
        return cls(
            processes=settings.imaging_processes or cls.processes,
            memory_limit=settings.imaging_memory_mb << 20,
            timeout=settings.imaging_timeout,
        )


def _child_init(memory_limit: int | None, pipe: Connection) -> None:
    global _step_pipe
    _step_pipe = pipe
    if memory_limit:
        resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))


def report_step(step: str, name: str | None) -> None:
    """In a child: tell the parent a step of the current call is done (a no-op outside the
    pool)."""
    if _step_pipe is not None:
        with contextlib.suppress(OSError):
            _step_pipe.send((_call_id, step, name))


def _run_call(call_id: int, fn: Callable[..., R], *args: Any) -> R:
    """In a child: ``fn(*args)`` as call ``call_id``, reported as started first (the parent
    times a call from then, and knows which of a process' calls it was running)."""
    global _call_id
    _call_id = call_id
    report_step(_STARTED, None)
    try:
        return fn(*args)
    finally:
        _call_id = None


def run_process_image(
    data: bytes,
    policy: ImagePolicy,
    declared_type: str | None,
    filename: str | None,
    threads: int | None = None,
) -> ProcessedImage:
    """The imaging entry point the handler sends to a child."""
    try:
        return process_image(
            data,
            policy,
            declared_type=declared_type,
            filename=filename,
            on_step=report_step,
            threads=threads,
        )
    except MemoryError:
        raise ImagingOutOfMemory("the image needs more memory than imaging may use") from None


def run_make_catalog(
    data: bytes,
    profile: CatalogProfile,
    filename: str | None,
    logo: bytes | None,
    threads: int | None = None,
) -> CatalogImage:
    """The catalog entry point (bulk ingest) the handler sends to a child: ``make_catalog``,
    with running out of the process' memory cap as ``ImagingOutOfMemory``."""
    try:
        return make_catalog(data, profile, filename=filename, logo=logo, threads=threads)
    except MemoryError:
        raise ImagingOutOfMemory("the image needs more memory than imaging may use") from None


@dataclass(eq=False)
class _Call:
    """One call given to a process: its step listener, and whether the process began it
    (``started``, set from the child's report)."""

    id: int
    listener: StepListener | None
    started: asyncio.Future[None]
    future: asyncio.Future[Any] | None = None  # its result, once given to a process

    def succeeded(self) -> bool:
        """Whether its process gave its result (it ended before anything that followed)."""
        future = self.future
        return (
            future is not None
            and future.done()
            and not future.cancelled()
            and future.exception() is None
        )


class _Slot:
    """One child process (a single-process executor), its step pipe, and the calls given
    to it that have not ended, in the order it runs them."""

    def __init__(self, options: PoolOptions) -> None:
        context = multiprocessing.get_context("spawn")
        self.reader, writer = context.Pipe(duplex=False)
        self.executor = ChildProcessPool(
            max_workers=1,
            mp_context=context,
            initializer=_child_init,
            initargs=(options.memory_limit, writer),
            max_tasks_per_child=options.tasks_per_process,
        )
        self._writer = writer  # kept open: replacement children get it too
        self.calls: dict[int, _Call] = {}
        self.replaced_by: _Slot | None = None  # once it was stopped: the slot in its place
        self.last_started: _Call | None = None  # the call its process began last
        self._watching = False

    def watch(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self._watching:
            loop.add_reader(self.reader.fileno(), self.drain)
            self._watching = True

    def drain(self) -> None:
        """Hand the steps the child reported so far to their calls."""
        try:
            while self.reader.poll():
                call_id, step, name = self.reader.recv()
                call = self.calls.get(call_id)
                if call is None:
                    continue
                if step == _STARTED:
                    self.last_started = call
                    if not call.started.done():
                        call.started.set_result(None)
                elif call.listener is not None:
                    call.listener(step, name)
        except (EOFError, OSError):
            pass

    def kill(self) -> None:
        processes: dict[int, Any] = getattr(self.executor, "_processes", None) or {}
        for process in list(processes.values()):
            with contextlib.suppress(Exception):
                process.kill()

    def close(self, loop: asyncio.AbstractEventLoop | None) -> None:
        if self._watching and loop is not None and not loop.is_closed():
            loop.remove_reader(self.reader.fileno())
        self._watching = False
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.reader.close()
        self._writer.close()

    def live(self) -> _Slot:
        """This slot, or the one that took its place (the slot a stopped one's calls and
        free places move to)."""
        slot = self
        while slot.replaced_by is not None:
            slot = slot.replaced_by
        return slot


def _retrieved(future: asyncio.Future[Any]) -> None:
    """Take a dropped future's outcome (asyncio logs one nobody took)."""
    if not future.cancelled():
        future.exception()


class _NotStarted(Exception):
    """The call's process was stopped before it began the call: the call goes to the
    replacement process. ``counts``: nothing else explains the stop (no other call had
    begun there and not ended: the process died idle or while receiving this call), so
    the move counts towards ``MAX_MOVES``; a call moved by another's crash or timeout
    moves for free."""

    def __init__(self, *, counts: bool) -> None:
        super().__init__()
        self.counts = counts


T = TypeVar("T")


class FreeSlots(Generic[T]):
    """Free slots handed out by priority: ``await get(priority)`` returns a free slot at
    once when no call waits, else waits; ``put(slot)`` gives a freed slot to the waiting
    call of highest priority (the earliest among equals), or keeps it. A call cancelled
    while it waits takes no slot (one handed to it as it was cancelled is passed on). A
    slot may be put more than once (a process with room for several calls); among the free
    ones, ``get`` takes the one ``load`` ranks lowest (default: the last one freed).
    Loop-bound: use from one event loop."""

    def __init__(self, load: Callable[[T], int] | None = None) -> None:
        self._idle: list[T] = []
        # (-priority, arrival, future): heapq pops the highest priority, then the earliest.
        self._waiters: list[tuple[int, int, asyncio.Future[T]]] = []
        self._arrivals = itertools.count()
        self._load = load

    @property
    def idle(self) -> int:
        """Slots free now."""
        return len(self._idle)

    @property
    def waiting(self) -> int:
        """Calls waiting for a slot (cancelled ones may count until a slot passes them)."""
        return len(self._waiters)

    async def get(self, priority: int = 0) -> T:
        """A free slot: at once when one is idle and no call waits, else when ``put``
        hands this call one (higher ``priority`` first)."""
        if self._idle and not self._waiters:
            return self._take()
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (-priority, next(self._arrivals), future))
        try:
            return await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.put(future.result())  # handed over as the wait was cancelled
            raise

    def put(self, slot: T) -> None:
        """Free ``slot``: to the first waiting call in priority order, else idle."""
        while self._waiters:
            _, _, future = heapq.heappop(self._waiters)
            if not future.done():
                future.set_result(slot)
                return
        self._idle.append(slot)

    def _take(self) -> T:
        if self._load is None:
            return self._idle.pop()
        load = self._load
        best = min(range(len(self._idle)), key=lambda i: load(self._idle[i]))
        return self._idle.pop(best)


class ImagingPool:
    """``await pool.run(fn, *args, on_step=..., priority=...)`` runs ``fn`` in a child
    process with room for it (``options.depth`` calls each, the first running); when none
    has room, the waiting call of highest priority gets the next place."""

    def __init__(self, options: PoolOptions | None = None) -> None:
        self.options = options or PoolOptions()
        self._free: FreeSlots[_Slot] | None = None
        self._slots: list[_Slot] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._busy = 0
        self._ids = itertools.count(1)
        self._closed = False
        self.crashes = 0

    @property
    def busy(self) -> int:
        """Calls given to a process now (running, or queued on it)."""
        return self._busy

    @property
    def waiting(self) -> int:
        """Calls waiting for a place in a process."""
        return 0 if self._free is None else self._free.waiting

    def _start(self) -> FreeSlots[_Slot]:
        if self._closed:
            raise ImagingFailed("the imaging pool was closed")
        if self._free is None:
            self._loop = asyncio.get_running_loop()
            self._free = FreeSlots(load=lambda slot: len(slot.live().calls))
            for _ in range(self.options.processes):
                slot = _Slot(self.options)
                self._slots.append(slot)
                for _ in range(max(1, self.options.depth)):
                    self._free.put(slot)
        return self._free

    async def run(
        self,
        fn: Callable[..., R],
        *args: Any,
        on_step: StepListener | None = None,
        pass_threads: bool = False,
        priority: int = 0,
    ) -> R:
        """``fn(*args)`` in a child process; with ``pass_threads``, ``fn`` also gets the
        number of threads it may use, decided once it has its place. When no process has
        room, the call waits; freed places go to the waiting call of highest ``priority``
        first (uploads 0, ingest ``kinds.INGEST_BATCH_PRIORITY``), first come first served
        among equals. ``options.timeout`` counts from the moment the process begins the
        call. Raises ``ImagingTimeout``, ``ImagingCrashed``, ``ImagingFailed`` (the pool
        was closed), or what ``fn`` raises."""
        free = self._start()
        loop = asyncio.get_running_loop()
        slot = (await free.get(priority)).live()
        self._busy += 1
        call = _Call(next(self._ids), on_step, loop.create_future())
        future: asyncio.Future[R] | None = None
        try:
            if pass_threads:
                args = (*args, self._threads_per_image())
            moves = 0
            while True:
                slot.calls[call.id] = call
                slot.watch(loop)
                try:
                    future = call.future = self._submit(slot, call, fn, args)
                    return await self._result(slot, call, future)
                except _NotStarted as moved:
                    del slot.calls[call.id]
                    if future is not None and not future.done():  # fails once its process dies
                        future.add_done_callback(_retrieved)
                    moves += moved.counts
                    if moves >= MAX_MOVES:
                        self.crashes += 1
                        raise ImagingCrashed(
                            f"the imaging process died {moves} times before it began this image"
                        ) from None
                    slot = self._replace(slot)
        finally:
            self._busy -= 1
            if future is not None and not future.done():
                self._abandon(free, slot, call, future)
            else:
                slot.calls.pop(call.id, None)
                if self._free is free:
                    free.put(slot.live())

    def _submit(
        self, slot: _Slot, call: _Call, fn: Callable[..., R], args: tuple[Any, ...]
    ) -> asyncio.Future[R]:
        try:
            return asyncio.wrap_future(slot.executor.submit(_run_call, call.id, fn, *args))
        except (BrokenProcessPool, RuntimeError):  # its process died idle; or it was stopped
            raise _NotStarted(counts=slot.replaced_by is None) from None

    async def _result(self, slot: _Slot, call: _Call, future: asyncio.Future[R]) -> R:
        """The result of ``call``, given to ``slot`` as ``future``: wait for the process
        to begin it (after the calls ahead of it, each within its time limit), then
        ``timeout`` for it."""
        timeout = self.options.timeout
        try:
            if not future.done():
                ahead = len(slot.calls) - 1
                try:
                    async with asyncio.timeout(timeout * (ahead + 1) + START_ALLOWANCE):
                        await asyncio.wait(
                            (future, call.started), return_when=asyncio.FIRST_COMPLETED
                        )
                except TimeoutError:
                    slot.drain()
                    if not call.started.done():  # a process that neither works nor dies
                        self._replace(slot)
                        raise _NotStarted(counts=True) from None
                slot.drain()
            result: R = await asyncio.wait_for(future, timeout)
        except TimeoutError:
            self._replace(slot)
            raise ImagingTimeout(
                f"imaging took longer than {timeout:g} s and was stopped"
            ) from None
        except BrokenProcessPool:
            slot.drain()  # its report that it began, if it did
            if not call.started.done():
                culprit = slot.last_started
                blameless = culprit is not None and culprit is not call and not culprit.succeeded()
                raise _NotStarted(counts=not blameless) from None
            self._replace(slot)
            self.crashes += 1
            raise ImagingCrashed("the imaging process died while decoding this image") from None
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if future.cancelled() and task is not None and not task.cancelling():
                # The executor dropped it: another call had its process stopped.
                raise _NotStarted(counts=False) from None
            slot.drain()
            if call.started.done():
                self._replace(slot)  # the job was abandoned: do not leave its decode running
            raise
        slot.drain()  # steps sent just before the result
        return result

    def _abandon(
        self, free: FreeSlots[_Slot], slot: _Slot, call: _Call, future: asyncio.Future[Any]
    ) -> None:
        """A call cancelled while queued behind another: it is in its process' queue
        already, so the process will run it. Its steps go nowhere; once it begins it gets
        ``timeout`` like any call (then its process is stopped); its place is freed when
        it ends, and a process it killed is replaced."""
        call.listener = None
        loop = asyncio.get_running_loop()
        watchdog: list[asyncio.TimerHandle] = []

        def overdue() -> None:
            if not future.done():
                with contextlib.suppress(ImagingFailed):
                    self._replace(slot)

        def started(_: object) -> None:
            if not future.done():
                watchdog.append(loop.call_later(self.options.timeout, overdue))

        def ended(done: asyncio.Future[Any]) -> None:
            for handle in watchdog:
                handle.cancel()
            crashed = not done.cancelled() and isinstance(done.exception(), BrokenProcessPool)
            if crashed:
                with contextlib.suppress(ImagingFailed):
                    self._replace(slot)
            slot.calls.pop(call.id, None)
            if self._free is free:
                free.put(slot.live())

        call.started.add_done_callback(started)
        future.add_done_callback(ended)

    def _replace(self, slot: _Slot) -> _Slot:
        """Stop ``slot``'s process and put a new one in its place (once: every call that
        was on it gets the same replacement). Calls queued on it fail there and move.
        Raises ``ImagingFailed`` once the pool is closed."""
        if slot.replaced_by is None:
            slot.kill()
            slot.drain()  # which of its calls had begun (after the kill: no more can)
            slot.close(self._loop)
            if self._closed:
                raise ImagingFailed("the imaging pool was closed")
            slot.replaced_by = _Slot(self.options)
            self._slots = [s for s in self._slots if s is not slot] + [slot.replaced_by]
        return slot.live()

    async def process(
        self,
        data: bytes,
        policy: ImagePolicy,
        *,
        declared_type: str | None,
        filename: str | None,
        on_step: StepListener | None = None,
    ) -> ProcessedImage:
        return await self.run(
            run_process_image,
            data,
            policy,
            declared_type,
            filename,
            on_step=on_step,
            pass_threads=True,
        )

    async def catalog(
        self,
        data: bytes,
        profile: CatalogProfile,
        *,
        filename: str | None,
        logo: bytes | None = None,
        priority: int = 0,
    ) -> CatalogImage:
        """A source file's catalog derivatives (``imaging.catalog.make_catalog``) made in a
        free process, on one thread: a bulk ingest wants throughput, and the other cores are
        busy with its other files (or another worker's: a second encode thread per image
        then competes with them, and made the 2-core bench slower and less steady).
        ``priority``: the place among waiting calls when every process is busy (ingest
        passes ``kinds.INGEST_BATCH_PRIORITY``, below the uploads' 0). Raises
        ``ImageRejected``, ``WatermarkLogoInvalid`` and the ``ImagingFailed`` family."""
        return await self.run(run_make_catalog, data, profile, filename, logo, 1, priority=priority)

    def _threads_per_image(self) -> int:
        """Encode threads for an image starting now: the cores shared among the images in
        flight (this one included). Alone, an image encodes its variants in parallel
        (latency); when every process is busy, each encodes on one thread (no hand-offs:
        throughput)."""
        cores = os.cpu_count() or 1
        return max(1, cores // max(1, self._busy))

    def close(self) -> None:
        """Stop every process, whatever it runs (the worker closes the pool after its
        jobs ended or were abandoned): calls given to one fail; a call after this raises
        ``ImagingFailed``."""
        self._closed = True
        for slot in self._slots:
            slot.kill()
            slot.close(self._loop)
        self._slots.clear()
        self._free = None
