"""Where decodes run: child processes a bad image cannot take down the worker with.

Each slot is its own single-process executor with an address-space cap. A decode that
crashes its process (a decoder bug, the kernel's OOM killer) or runs past the timeout costs
only the job it was running: that slot is replaced and every other slot keeps its work.
(One shared ``ProcessPoolExecutor`` would fail every pending task when one child dies.)

Children report steps (decoded, each variant) through a pipe, so the job's progress is real
while the work happens in another process. They die with the worker, however it ends, and
leave Ctrl-C to it (``queue.children``).

When every process is busy, calls wait for one by priority (``run(..., priority=)``): an
upload (0) goes before the ingest batches waiting (``kinds.INGEST_BATCH_PRIORITY``, -10),
first come first served within one priority.
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
    """In a child: tell the parent a step is done (a no-op outside the pool)."""
    if _step_pipe is not None:
        with contextlib.suppress(OSError):
            _step_pipe.send((step, name))


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


class _Slot:
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
        self.listener: StepListener | None = None
        self._watching = False

    def watch(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self._watching:
            loop.add_reader(self.reader.fileno(), self.drain)
            self._watching = True

    def drain(self) -> None:
        try:
            while self.reader.poll():
                step, name = self.reader.recv()
                if self.listener is not None:
                    self.listener(step, name)
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
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.reader.close()
        self._writer.close()


T = TypeVar("T")


class FreeSlots(Generic[T]):
    """Free slots handed out by priority: ``await get(priority)`` returns a free slot at
    once when no call waits, else waits; ``put(slot)`` gives a freed slot to the waiting
    call of highest priority (the earliest among equals), or keeps it. A call cancelled
    while it waits takes no slot (one handed to it as it was cancelled is passed on).
    Loop-bound: use from one event loop."""

    def __init__(self) -> None:
        self._idle: list[T] = []
        # (-priority, arrival, future): heapq pops the highest priority, then the earliest.
        self._waiters: list[tuple[int, int, asyncio.Future[T]]] = []
        self._arrivals = itertools.count()

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
            return self._idle.pop()
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


class ImagingPool:
    """``await pool.run(fn, *args, on_step=..., priority=...)`` runs ``fn`` in a free child
    process; when none is free, the waiting call of highest priority gets the next one."""

    def __init__(self, options: PoolOptions | None = None) -> None:
        self.options = options or PoolOptions()
        self._free: FreeSlots[_Slot] | None = None
        self._slots: list[_Slot] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._busy = 0
        self.crashes = 0

    @property
    def busy(self) -> int:
        """Calls running in a process now."""
        return self._busy

    @property
    def waiting(self) -> int:
        """Calls waiting for a free process."""
        return 0 if self._free is None else self._free.waiting

    def _start(self) -> FreeSlots[_Slot]:
        if self._free is None:
            self._loop = asyncio.get_running_loop()
            self._free = FreeSlots()
            for _ in range(self.options.processes):
                slot = _Slot(self.options)
                self._slots.append(slot)
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
        """``fn(*args)`` in a free process; with ``pass_threads``, ``fn`` also gets the
        number of threads it may use, decided once it has its process. When every process
        is busy, the call waits; freed processes go to the waiting call of highest
        ``priority`` first (uploads 0, ingest ``kinds.INGEST_BATCH_PRIORITY``), first come
        first served among equals. Raises ``ImagingTimeout``, ``ImagingCrashed``, or what
        ``fn`` raises."""
        free = self._start()
        loop = asyncio.get_running_loop()
        slot = await free.get(priority)
        self._busy += 1
        slot.watch(loop)
        slot.listener = on_step
        replace = False
        try:
            if pass_threads:
                args = (*args, self._threads_per_image())
            future = asyncio.wrap_future(slot.executor.submit(fn, *args))
            try:
                result: R = await asyncio.wait_for(future, self.options.timeout)
            except TimeoutError:
                replace = True
                raise ImagingTimeout(
                    f"imaging took longer than {self.options.timeout:g} s and was stopped"
                ) from None
            except BrokenProcessPool:
                replace = True
                self.crashes += 1
                raise ImagingCrashed("the imaging process died while decoding this image") from None
            except asyncio.CancelledError:
                replace = True  # the job was abandoned: do not leave its decode running
                raise
            slot.drain()  # steps sent just before the result
            return result
        finally:
            self._busy -= 1
            slot.listener = None
            if replace:
                slot.kill()
                slot.close(loop)
                slot = _Slot(self.options)
                self._slots = [s for s in self._slots if not s.reader.closed] + [slot]
            free.put(slot)

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
        for slot in self._slots:
            slot.close(self._loop)
        self._slots.clear()
        self._free = None
