"""A media pipeline in one test: real Postgres queue and worker, real Redis events, a real
store (memory served over HTTP, or S3 through moto), and the real imaging process pool."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.routing import Mount

from mediajobs.config import Settings
from mediajobs.db import Pool
from mediajobs.db.media import MediaRecord, MediaRepository
from mediajobs.db.policies import SitePolicies
from mediajobs.handlers import MediaHandlers, WorkerResources, ingest_handlers, media_handlers
from mediajobs.handlers.imaging_pool import ImagingPool, PoolOptions
from mediajobs.handlers.wiring import understand_handler
from mediajobs.imaging.catalog import CatalogImage, CatalogProfile
from mediajobs.imaging.pipeline import ProcessedImage
from mediajobs.imaging.policy import ImagePolicy
from mediajobs.queue import HandlerRegistry, Job, JobQueue, JobSpec, JobState, Worker
from mediajobs.queue.kinds import MEDIA_DELETE, MEDIA_EMBED, MEDIA_PROCESS
from mediajobs.realtime import EventRecorder, RedisPublisher
from mediajobs.realtime.events import Event
from mediajobs.realtime.publisher import decode_message
from mediajobs.storage import MemoryStore, Store, StoreRegistry
from mediajobs.storage.keys import upload_key
from tests.conftest import free_port
from tests.support.emulators import S3_CREDENTIALS
from tests.support.http import serve_in_thread
from tests.support.workers import queue_pool, running_worker, wait_for

CHANNEL_PREFIX = "mediajobs-test:"


@contextlib.contextmanager
def memory_store() -> Iterator[MemoryStore]:
    """A memory store whose URLs are served by a real uvicorn."""
    port = free_port()
    store = MemoryStore(f"http://127.0.0.1:{port}/storage")
    with serve_in_thread(Starlette(routes=[Mount("/storage", app=store.app())]), port):
        yield store


def crash_now(*_args: Any) -> None:
    """Runs in an imaging child: dies the way a decoder segfault would."""
    os.kill(os.getpid(), signal.SIGKILL)


class CrashingPool(ImagingPool):
    """The real pool, except that a file named ``crash.jpg`` kills its imaging process
    (``crashes`` counts them)."""

    async def catalog(
        self,
        data: bytes,
        profile: CatalogProfile,
        *,
        filename: str | None,
        logo: bytes | None = None,
        priority: int = 0,
    ) -> CatalogImage:
        if filename == "crash.jpg":
            await self.run(crash_now, priority=priority)
        return await super().catalog(data, profile, filename=filename, logo=logo, priority=priority)

    async def process(
        self,
        data: bytes,
        policy: ImagePolicy,
        *,
        declared_type: str | None,
        filename: str | None,
        on_step: Any = None,
    ) -> ProcessedImage:
        if filename == "crash.jpg":
            await self.run(crash_now, on_step=on_step)
        return await super().process(
            data, policy, declared_type=declared_type, filename=filename, on_step=on_step
        )


@dataclass
class MediaEnv:
    pool: Pool
    queue: JobQueue
    store: Store
    stores: StoreRegistry
    handlers: MediaHandlers
    redis: Redis
    channel: str
    worker: Worker | None = None
    owner: str = "alice"

    @property
    def media(self) -> MediaRepository:
        return MediaRepository(self.pool)

    @property
    def policies(self) -> SitePolicies:
        return SitePolicies(self.pool)

    async def gallery(self, owner: str) -> list[MediaRecord]:
        """What a gallery shows: the owner's ready items only (the review gate), by sort
        order (a replacement takes its predecessor's place)."""
        async with self.pool.connection() as conn:
            rows = await (
                await conn.execute(
                    "SELECT * FROM media WHERE owner_id = %s AND status = 'ready' "
                    "ORDER BY sort_order, created_at, id",
                    (owner,),
                )
            ).fetchall()
        return [MediaRecord.from_row(row) for row in rows]

    async def upload(
        self,
        data: bytes,
        filename: str = "photo.jpg",
        *,
        content_type: str = "image/jpeg",
        replaces: uuid.UUID | None = None,
        owner: str | None = None,
    ) -> tuple[uuid.UUID, uuid.UUID]:
        """Put a source object, create its media row and enqueue ``media.process``, the
        way the API's upload/complete will: row and job in one transaction."""
        owner = owner or self.owner
        key = upload_key(owner, filename)
        stored = await self.store.upload(key, data, content_type or "application/octet-stream")
        async with self.media.transaction() as conn:
            record, _ = await self.media.create(
                owner_id=owner,
                source=stored.locator,
                original_filename=filename,
                declared_type=content_type,
                replaces=replaces,
                conn=conn,
            )
            job = await self.queue.enqueue(
                JobSpec(MEDIA_PROCESS, owner, {"mediaId": str(record.id)}, max_attempts=3),
                conn=conn,
            )
            await self.media.set_job(record.id, job.id, conn=conn)
        return record.id, job.id

    async def delete(self, media_id: uuid.UUID, owner: str | None = None) -> uuid.UUID:
        job = await self.queue.enqueue(
            JobSpec(MEDIA_DELETE, owner or self.owner, {"mediaId": str(media_id)})
        )
        return job.id

    async def finished(self, job_id: uuid.UUID, timeout: float = 60) -> Job:
        async def done() -> bool:
            job = await self.queue.get(job_id)
            return job is not None and job.state.finished

        await wait_for(done, timeout, interval=0.05)
        job = await self.queue.get(job_id)
        assert job is not None
        return job

    async def succeeded(self, job_id: uuid.UUID, timeout: float = 60) -> Job:
        job = await self.finished(job_id, timeout)
        assert job.state is JobState.SUCCEEDED, job.error
        return job

    async def record(self, media_id: uuid.UUID) -> MediaRecord:
        record = await self.media.get(media_id)
        assert record is not None
        return record

    async def events(self, job_id: uuid.UUID) -> list[tuple[str, dict[str, Any]]]:
        async with self.pool.connection() as conn:
            rows = await (
                await conn.execute(
                    "SELECT type, data::text AS data FROM job_events WHERE job_id = %s ORDER BY id",
                    (job_id,),
                )
            ).fetchall()
        return [(row["type"], json.loads(row["data"])) for row in rows]

    @contextlib.asynccontextmanager
    async def live_events(self) -> AsyncIterator[list[Event]]:
        """Collects every event published on Redis while the block runs (a real
        subscription to the channel, as the SSE hub has)."""
        received: list[Event] = []
        pubsub = self.redis.pubsub()
        await pubsub.subscribe(self.channel)

        async def listen() -> None:
            async for message in pubsub.listen():
                if message["type"] == "message":
                    received.extend(decode_message(message["data"]))

        task = asyncio.create_task(listen())
        try:
            yield received
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await pubsub.aclose()

    async def keys(self, prefix: str = "media/") -> list[str]:
        page = await self.store.list(prefix)
        return sorted(item.key for item in page.items)


def s3_worker_env(moto_url: str, bucket: str, redis_url: str) -> dict[str, str]:
    """The environment of a `mediajobs worker` process on the moto bucket ``bucket``."""
    return {
        **S3_CREDENTIALS,
        "REDIS_URL": redis_url,
        "S3_BUCKET": bucket,
        "S3_ENDPOINT_URL": moto_url,
        "S3_REGION": "us-east-1",
        "S3_FORCE_PATH_STYLE": "true",
        "MEDIAJOBS_LEASE_SECONDS": "2",
        "MEDIAJOBS_POLL_INTERVAL": "0.2",
        "MEDIAJOBS_PROGRESS_INTERVAL": "0",
        "MEDIAJOBS_IMAGING_PROCESSES": "1",
    }


@contextlib.asynccontextmanager
async def media_env(
    database_url: str,
    redis_url: str,
    store: Store,
    *,
    imaging: ImagingPool | None = None,
    settings: Settings | None = None,
    worker: bool = True,
    **worker_options: Any,
) -> AsyncIterator[MediaEnv]:
    redis = Redis.from_url(redis_url)
    stores = StoreRegistry(store)
    pool_for_imaging = imaging or ImagingPool(PoolOptions(processes=2, timeout=60))
    http = httpx.AsyncClient(timeout=(settings or Settings()).review_timeout)
    registry = HandlerRegistry()
    try:
        async with queue_pool(database_url) as pool:
            channel = CHANNEL_PREFIX + uuid.uuid4().hex
            recorder = EventRecorder(RedisPublisher(redis, channel))
            resources = WorkerResources(
                settings or Settings(), pool, stores, pool_for_imaging, http, recorder
            )
            handlers = media_handlers(resources)
            handlers.register(registry)
            ingest_handlers(resources).register(registry)
            registry.register(MEDIA_EMBED, understand_handler(resources))
            queue = JobQueue(pool, hooks=recorder)
            env = MediaEnv(pool, queue, store, stores, handlers, redis, channel)
            if not worker:
                yield env
                return
            options = {"progress_interval": 0.0, "poll_interval": 0.1, **worker_options}
            async with running_worker(queue, registry, database_url, **options) as running:
                env.worker = running
                yield env
    finally:
        await registry.aclose()
        pool_for_imaging.close()
        await http.aclose()
        await redis.aclose()
        await asyncio.sleep(0)
