"""``media.delete`` and ``media.purge``.

``media.delete``  hide at once (soft delete) and schedule ``media.purge`` after the undo
                  window, in one transaction. Idempotent.
``media.purge``   after the window, delete the source and every variant through each
                  locator's own store, unless the item was restored.
"""

from __future__ import annotations

from mediajobs.db.collections import CollectionRepository
from mediajobs.db.media import MediaRecord, MediaRepository, MediaStatus
from mediajobs.db.policies import SitePolicies
from mediajobs.db.vectors import forget_embeddings
from mediajobs.errors import JobFailed
from mediajobs.handlers.jobs import media_id_of, schedule_purge
from mediajobs.queue.models import Job
from mediajobs.queue.registry import JobContext
from mediajobs.realtime import Event, EventRecorder
from mediajobs.realtime.events import collection_events
from mediajobs.storage import StoreRegistry
from mediajobs.types import JSON


def _still_hidden(record: MediaRecord, hidden_at: str) -> bool:
    """The item is still in the delete that happened at ``hidden_at``."""
    return (
        record.status is MediaStatus.DELETED
        and record.deleted_at is not None
        and record.deleted_at.isoformat() == hidden_at
    )


class DeleteHandler:
    """``media.delete``: hide the item and schedule its purge."""

    def __init__(
        self, *, media: MediaRepository, policies: SitePolicies, events: EventRecorder
    ) -> None:
        self.media = media
        self.policies = policies
        self.events = events

    async def __call__(self, ctx: JobContext, job: Job) -> JSON:
        media_id = media_id_of(ctx, job)
        media = self.media
        hidden_at = job.payload.get("deletedAt")
        policy = await self.policies.load()
        recorded: list[Event] = []
        async with media.transaction() as conn:
            if hidden_at is None:  # enqueued on its own: hide it now
                record = await media.soft_delete(
                    media_id, job.owner_id, undo_window=policy.undo_window_seconds, conn=conn
                )
                recorded = await self.events.collections_changed(conn, media_id, "deleted", job.id)
            else:  # the API hid it when it enqueued this job (and told its collections)
                record = await media.get(media_id, job.owner_id, conn=conn)
            if record is None:
                raise JobFailed(f"media {media_id} not found", code="media_not_found")
            if hidden_at is not None and not _still_hidden(record, str(hidden_at)):
                # Restored (or deleted again, which has its own job) before this ran: the
                # delete this job stood for is over.
                return {"mediaId": str(media_id), "status": record.status.value, "purged": False}
            if record.purged_at is None:
                await schedule_purge(ctx, record, conn)
        await self.events.committed(recorded)
        return {
            "mediaId": str(media_id),
            "status": record.status.value,
            "purgeAfter": record.purge_after.isoformat() if record.purge_after else None,
            "purged": record.purged_at is not None,
        }


class PurgeHandler:
    """``media.purge``: delete a deleted item's objects once its undo window is over."""

    def __init__(
        self, *, media: MediaRepository, stores: StoreRegistry, events: EventRecorder
    ) -> None:
        self.media = media
        self.stores = stores
        self.events = events

    async def __call__(self, ctx: JobContext, job: Job) -> JSON:
        media_id = media_id_of(ctx, job)
        record = await self.media.claim_purge(media_id)
        if record is None:  # restored, purged already, or deleted again with a later window
            return {"mediaId": str(media_id), "purged": False}
        locators = sorted(record.locators(), key=str)
        for done, locator in enumerate(locators, start=1):
            await self.stores.delete(locator)
            await ctx.progress(done / len(locators), f"deleted {done} of {len(locators)}")
        async with self.media.transaction() as conn:
            holders = await CollectionRepository.containing(conn, media_id)
            purged = await self.media.mark_purged(media_id, conn=conn)
            if purged:
                await forget_embeddings(conn, media_id)
            recorded: list[Event] = []
            if purged and holders:  # detached: each collection is at a new version
                now = await CollectionRepository.entities(conn, holders)
                pending = collection_events(now, "purged", media_id=media_id, job_id=job.id)
                recorded = await self.events.record_events(conn, pending)
        await self.events.committed(recorded)
        return {"mediaId": str(media_id), "purged": True, "objects": len(locators)}
