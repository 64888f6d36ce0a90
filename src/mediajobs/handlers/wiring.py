"""The worker's handlers wired to its resources: ``WorkerResources`` (what the worker's
composition root, ``cli.worker.open_worker``, opens and closes) and ``build_registry``, the
default ``--app`` of ``mediajobs worker`` (also reachable as
``mediajobs.handlers:build_registry``)."""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from mediajobs.config import Settings
from mediajobs.db.ingest import IngestRepository
from mediajobs.db.media import MediaRepository
from mediajobs.db.policies import SitePolicies
from mediajobs.db.pool import Pool
from mediajobs.db.tags import TagRepository
from mediajobs.handlers.imaging_pool import ImagingPool
from mediajobs.handlers.ingest import IngestHandlers, IngestOptions
from mediajobs.handlers.media import MediaHandlers
from mediajobs.handlers.review import Reviewer, WebhookReviewer
from mediajobs.handlers.system import PING_KIND, ping
from mediajobs.handlers.understand import UnderstandHandler
from mediajobs.queue import kinds
from mediajobs.queue.registry import HandlerRegistry
from mediajobs.realtime import EventRecorder
from mediajobs.storage import StoreRegistry
from mediajobs.vision.catalog import ModelCatalog


@dataclass(frozen=True)
class WorkerResources:
    """What a worker's handlers may use, opened and closed by the worker's composition
    root."""

    settings: Settings
    pool: Pool  # the worker's database pool (the queue's own)
    stores: StoreRegistry
    imaging: ImagingPool
    http: httpx.AsyncClient  # outbound calls (the review webhook)
    events: EventRecorder  # the queue's own: events handlers record beside transitions


def media_handlers(resources: WorkerResources) -> MediaHandlers:
    """The media handlers wired to ``resources``."""
    settings = resources.settings
    reviewers: dict[str, Reviewer] = {}
    if settings.review_webhook_url:
        reviewers["webhook"] = WebhookReviewer(
            settings.review_webhook_url,
            http=resources.http,
            secret=settings.review_webhook_secret,
        )
    return MediaHandlers(
        media=MediaRepository(resources.pool),
        policies=SitePolicies(resources.pool),
        stores=resources.stores,
        imaging=resources.imaging,
        reviewers=reviewers,
        events=resources.events,
    )


def ingest_handlers(resources: WorkerResources) -> IngestHandlers:
    """The bulk ingest handlers wired to ``resources``."""
    settings = resources.settings
    return IngestHandlers(
        ingest=IngestRepository(resources.pool),
        media=MediaRepository(resources.pool),
        policies=SitePolicies(resources.pool),
        stores=resources.stores,
        imaging=resources.imaging,
        events=resources.events,
        options=IngestOptions(
            max_attempts=settings.ingest_max_attempts,
            settle_seconds=settings.ingest_settle_seconds,
        ),
    )


def understand_handler(resources: WorkerResources) -> UnderstandHandler:
    """``media.embed`` wired to ``resources``."""
    return UnderstandHandler(
        pool=resources.pool,
        media=MediaRepository(resources.pool),
        tags=TagRepository(resources.pool),
        ingest=IngestRepository(resources.pool),
        stores=resources.stores,
        catalog=ModelCatalog.from_settings(resources.settings),
    )


def build_registry(resources: WorkerResources) -> HandlerRegistry:
    """Every handler this deployment runs."""
    registry = HandlerRegistry()
    registry.register(PING_KIND, ping)
    media_handlers(resources).register(registry)
    ingest_handlers(resources).register(registry)
    registry.register(kinds.MEDIA_EMBED, understand_handler(resources))
    return registry
