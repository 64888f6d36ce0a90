"""What the media handlers share: reading a job's media id, the two steps that end a
replacement or a delete (cut over to the replacement, schedule the purge), each inside the
caller's transaction."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from mediajobs.db.media import MediaRecord, MediaRepository
from mediajobs.errors import JobFailed
from mediajobs.queue import kinds
from mediajobs.queue.models import Job, JobSpec
from mediajobs.queue.registry import JobContext


def media_id_of(ctx: JobContext, job: Job) -> uuid.UUID:
    """The job's media id, also named in the worker's log line about the job's outcome."""
    try:
        media_id = uuid.UUID(str(job.payload["mediaId"]))
    except (KeyError, ValueError):
        raise JobFailed("the job payload has no valid mediaId", code="invalid_payload") from None
    ctx.describe(mediaId=str(media_id))
    return media_id


def now() -> str:
    """The current time as the ISO text stored in an item's review."""
    return datetime.now(UTC).isoformat()


async def cut_over(
    ctx: JobContext, media: MediaRepository, ready: MediaRecord, undo_window: float, conn: Any
) -> MediaRecord | None:
    """Inside the caller's transaction: a ready replacement takes its predecessor's place,
    and the predecessor's purge is scheduled. Returns the predecessor (None: there was
    none)."""
    old = await media.cut_over(ready, undo_window=undo_window, conn=conn)
    if old is not None:
        await schedule_purge(ctx, old, conn)
    return old


async def schedule_purge(ctx: JobContext, deleted: MediaRecord, conn: Any) -> None:
    """Inside the caller's transaction: ``media.purge`` of a deleted item, due when its undo
    window ends (one job per delete, by idempotency key)."""
    assert deleted.deleted_at is not None
    assert deleted.purge_after is not None
    await ctx.queue.enqueue(
        JobSpec(
            kinds.MEDIA_PURGE,
            deleted.owner_id,
            {"mediaId": str(deleted.id)},
            run_at=deleted.purge_after,
            idempotency_key=f"purge:{deleted.id}:{deleted.deleted_at.timestamp()}",
        ),
        conn=conn,
    )
