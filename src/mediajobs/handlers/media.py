"""The media job kinds, registered together: ``media.process`` (``process.py``),
``media.review`` (``review.py``), ``media.delete`` and ``media.purge`` (``delete.py``)."""

from __future__ import annotations

from collections.abc import Mapping

from mediajobs.db.media import MediaRepository
from mediajobs.db.policies import SitePolicies
from mediajobs.handlers.delete import DeleteHandler, PurgeHandler
from mediajobs.handlers.imaging_pool import ImagingPool
from mediajobs.handlers.process import ProcessHandler
from mediajobs.handlers.review import Reviewer, ReviewHandler
from mediajobs.queue import kinds
from mediajobs.queue.registry import HandlerRegistry
from mediajobs.realtime import EventRecorder
from mediajobs.storage import StoreRegistry


class MediaHandlers:
    """The four media handlers. Everything they use comes in through the constructor,
    built and closed by the worker's composition root (``cli.worker.open_worker``): the
    repositories, the stores, the imaging pool, the reviewers by provider name, and the
    event recorder (``collection_updated`` when a job changes what a collection shows)."""

    def __init__(
        self,
        *,
        media: MediaRepository,
        policies: SitePolicies,
        stores: StoreRegistry,
        imaging: ImagingPool,
        reviewers: Mapping[str, Reviewer],
        events: EventRecorder,
    ) -> None:
        self.process = ProcessHandler(
            media=media, policies=policies, stores=stores, imaging=imaging, events=events
        )
        self.review = ReviewHandler(
            media=media, policies=policies, stores=stores, reviewers=reviewers, events=events
        )
        self.delete = DeleteHandler(media=media, policies=policies, events=events)
        self.purge = PurgeHandler(media=media, stores=stores, events=events)

    def register(self, registry: HandlerRegistry) -> HandlerRegistry:
        """Register the four media kinds on ``registry``."""
        registry.register(kinds.MEDIA_PROCESS, self.process)
        registry.register(kinds.MEDIA_REVIEW, self.review)
        registry.register(kinds.MEDIA_DELETE, self.delete)
        registry.register(kinds.MEDIA_PURGE, self.purge)
        return registry
