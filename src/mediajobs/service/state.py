"""What one API process holds: its long-lived clients, built by the app's lifespan."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass

from cachetools import TTLCache
from redis.asyncio import Redis
from starlette.requests import Request

from mediajobs.config import Settings
from mediajobs.db.collections import CollectionRepository
from mediajobs.db.media import MediaRepository
from mediajobs.db.policies import SitePolicies
from mediajobs.db.pool import Pool
from mediajobs.db.search import SearchRepository
from mediajobs.db.tags import TagRepository
from mediajobs.queue.queue import JobQueue
from mediajobs.realtime import (
    EventHub,
    EventRecorder,
    EventStore,
    RealtimeMetrics,
    StreamOptions,
)
from mediajobs.service.auth import Authenticator, Principal
from mediajobs.service.errors import ApiError
from mediajobs.service.metrics import QueueGauges
from mediajobs.service.understanding import SemanticSearch
from mediajobs.storage import StoreRegistry
from mediajobs.storage.check import CheckReport, check_store

STORAGE_CHECK_TIMEOUT = 10.0
STORAGE_CHECK_EVERY = 30.0  # seconds a storage check result is reused by /readyz


@dataclass
class Services:
    """Long-lived clients of one API process, and the repositories routes use (built once
    on its pool by the lifespan; routes never build their own)."""

    settings: Settings
    pool: Pool
    redis: Redis
    queue: JobQueue
    media: MediaRepository
    policies: SitePolicies
    collections: CollectionRepository
    tags: TagRepository
    search: SearchRepository
    semantic: SemanticSearch
    stores: StoreRegistry
    storage_check: StorageCheck
    auth: Authenticator
    events: EventStore
    recorder: EventRecorder  # the queue's: events recorded with a route's own transaction
    hub: EventHub
    metrics: RealtimeMetrics
    stream_options: StreamOptions
    queue_gauges: QueueGauges
    stream_slots: StreamSlots
    public_cache: PublicCache


def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found


def caller(request: Request) -> tuple[Services, Principal]:
    """The process's services and the bearer-authenticated caller (or ``AuthError``)."""
    svc = services(request)
    return svc, svc.auth.bearer(request.headers.get("authorization"))


class StorageCheck:
    """The storage check of `mediajobs storage check`, rerun by /readyz at most every
    STORAGE_CHECK_EVERY seconds (it writes, reads and deletes a probe object)."""

    def __init__(self, stores: StoreRegistry) -> None:
        self._stores = stores
        self._last: CheckReport | None = None
        self._at = 0.0
        self._lock = asyncio.Lock()

    async def report(self) -> CheckReport:
        async with self._lock:
            now = asyncio.get_running_loop().time()
            if self._last is None or now - self._at >= STORAGE_CHECK_EVERY:
                try:
                    async with asyncio.timeout(STORAGE_CHECK_TIMEOUT):
                        self._last = await check_store(self._stores.active)
                except TimeoutError:
                    active = self._stores.active
                    self._last = CheckReport(
                        active.provider, active.bucket, error="timed out", error_code="timeout"
                    )
                self._at = now
            return self._last


STREAM_RETRY_AFTER = 10  # seconds a client refused a stream waits before trying again


class StreamSlots:
    """Open event streams per user in this process, at most ``per_user`` each."""

    def __init__(self, per_user: int) -> None:
        self.per_user = per_user
        self._open: Counter[str] = Counter()

    def take(self, owner_id: str) -> None:
        """Count one more stream of ``owner_id``, or raise ``ApiError`` 429."""
        if self._open[owner_id] >= self.per_user:
            raise ApiError(
                429,
                "too_many_streams",
                f"at most {self.per_user} event streams may be open at once; close one",
                headers={"Retry-After": str(STREAM_RETRY_AFTER)},
            )
        self._open[owner_id] += 1

    def give_back(self, owner_id: str) -> None:
        self._open[owner_id] -= 1
        if self._open[owner_id] <= 0:
            del self._open[owner_id]

    def open(self, owner_id: str) -> int:
        return self._open[owner_id]


@dataclass(frozen=True, slots=True)
class RenderedPublic:
    """A rendered public read: the body, its ETag, and the fingerprint of the rows it was
    rendered from (``CollectionRepository.public_view``)."""

    fingerprint: str
    content: bytes
    etag: str


# Bytes of rendered bodies one API process keeps (a 50-item collection is about 55 KB).
PUBLIC_CACHE_BYTES = 64 * 1024 * 1024


class PublicCache:
    """The rendered public reads of this process, by entity: at most ``max_bytes`` of
    bodies (least recently rendered first out), each for at most ``ttl`` seconds (0 keeps
    nothing). An entry serves only while the collection's fingerprint is the one it was
    rendered from, so a change anywhere (another process, a worker) shows at the next
    request."""

    def __init__(self, *, ttl: float, max_bytes: int = PUBLIC_CACHE_BYTES) -> None:
        self._max_bytes = max_bytes
        self._entries: TTLCache[tuple[str, str], RenderedPublic] | None = (
            TTLCache(maxsize=max_bytes, ttl=ttl, getsizeof=_body_size) if ttl > 0 else None
        )

    def get(self, key: tuple[str, str], fingerprint: str) -> RenderedPublic | None:
        """The entry of ``key`` if it was rendered from ``fingerprint``."""
        if self._entries is None:
            return None
        entry = self._entries.get(key)
        return entry if entry is not None and entry.fingerprint == fingerprint else None

    def put(self, key: tuple[str, str], rendered: RenderedPublic) -> None:
        """Keep ``rendered`` (a body larger than the whole budget is not kept)."""
        if self._entries is not None and _body_size(rendered) <= self._max_bytes:
            self._entries[key] = rendered


def _body_size(rendered: RenderedPublic) -> int:
    return len(rendered.content) + len(rendered.fingerprint) + len(rendered.etag)
