"""The ``media`` table: a user's library, its statuses, the review gate, replacement and soft
deletion. Every status change is one statement (or one transaction, for a cutover), so two
workers can never leave an item half changed. The statements live in ``db/media_sql.py``;
public URLs of an item's objects are rendered above this layer (``storage/urls.py``)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, cast

import psycopg
from psycopg.rows import DictRow
from psycopg.types.json import Jsonb

from mediajobs.db import media_sql as sql
from mediajobs.db.pool import Pool
from mediajobs.storage.base import Locator
from mediajobs.types import JSON

Conn = psycopg.AsyncConnection[DictRow]


class MediaStatus(StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    READY = "ready"  # the only status gallery reads show
    IN_REVIEW = "in_review"
    REJECTED = "rejected"
    FAILED = "failed"
    DELETED = "deleted"


@dataclass(frozen=True)
class MediaRecord:
    id: uuid.UUID
    owner_id: str
    kind: str
    purpose: str
    status: MediaStatus
    source_locator: str
    original_filename: str | None
    declared_type: str | None
    detected_type: str | None
    bytes: int | None
    width: int | None
    height: int | None
    variants: dict[str, Any]
    blur_data_url: str | None
    exif: dict[str, Any] | None
    gps: dict[str, Any] | None
    sha256: str | None
    duplicate_of: uuid.UUID | None
    sort_order: int
    alt_text: str | None
    replaces: uuid.UUID | None
    replaced_by: uuid.UUID | None
    job_id: uuid.UUID | None
    review: dict[str, Any] | None
    error: dict[str, Any] | None
    deleted_from: MediaStatus | None
    deleted_at: datetime | None
    purge_after: datetime | None
    purged_at: datetime | None
    created_at: datetime
    updated_at: datetime
    processed_at: datetime | None
    phash: int | None  # 64-bit perceptual hash (vision.phash), once media.embed ran
    caption: str | None
    tags_text: str  # the item's distinct tags, one per line (db.tags writes it)
    understood_at: datetime | None  # when media.embed last finished

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> MediaRecord:
        values = dict(row)
        values["status"] = MediaStatus(values["status"])
        if values["deleted_from"] is not None:
            values["deleted_from"] = MediaStatus(values["deleted_from"])
        return cls(**values)

    @property
    def tags(self) -> list[str]:
        """The item's distinct tags (every source), in the order they were written."""
        return self.tags_text.split("\n") if self.tags_text else []

    @property
    def source(self) -> Locator:
        return Locator.parse(self.source_locator)

    def locators(self) -> set[Locator]:
        """Every object this item owns: its source and each distinct variant."""
        found = {self.source}
        for variant in self.variants.values():
            found.add(Locator.parse(variant["locator"]))
        return found


@dataclass(frozen=True)
class IngestedMedia:
    """A bulk-ingested image's media row (``purpose`` ``catalog`` for ingest): ``id`` is
    its checkpoint's media id; ``source_locator`` the stored original; ``bytes`` its size;
    ``width``/``height`` in pixels, upright; ``variants`` name -> ``{locator, width,
    height, bytes, ...}`` like processed uploads; ``exif`` without GPS, ``gps`` apart
    (private); ``sha256`` of the original's bytes (hex)."""

    id: uuid.UUID
    owner_id: str
    purpose: str
    source_locator: str
    original_filename: str | None
    detected_type: str
    bytes: int
    width: int
    height: int
    variants: dict[str, JSON]
    blur_data_url: str | None
    exif: dict[str, JSON] | None
    gps: dict[str, JSON] | None
    sha256: str


def _jsonb(value: Mapping[str, JSON] | None) -> Jsonb | None:
    return None if value is None else Jsonb(dict(value))


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class MediaRepository:
    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    @asynccontextmanager
    async def _conn(self, conn: Conn | None) -> Any:
        if conn is not None:
            yield conn
            return
        async with self._pool.connection() as fresh:
            yield fresh

    def transaction(self) -> AbstractAsyncContextManager[Conn]:
        """A connection inside one transaction (commit on exit, rollback on error)."""
        return _transaction(self._pool)

    async def _one(
        self, statement: str, params: Mapping[str, Any], conn: Conn | None
    ) -> MediaRecord | None:
        async with self._conn(conn) as c:
            row = await (await c.execute(statement, params)).fetchone()
        return None if row is None else MediaRecord.from_row(row)

    async def create(
        self,
        *,
        owner_id: str,
        source: Locator,
        media_id: uuid.UUID | None = None,
        purpose: str = "gallery",
        original_filename: str | None = None,
        declared_type: str | None = None,
        alt_text: str | None = None,
        replaces: uuid.UUID | None = None,
        job_id: uuid.UUID | None = None,
        conn: Conn | None = None,
    ) -> tuple[MediaRecord, bool]:
        """A new pending item for an uploaded source; ``(existing, False)`` when that source
        already became an item (completing an upload twice is one item)."""
        params = {
            "id": media_id or uuid.uuid4(),
            "owner": owner_id,
            "purpose": purpose,
            "source": str(source),
            "filename": original_filename,
            "declared": declared_type,
            "alt": alt_text,
            "replaces": replaces,
            "job": job_id,
        }
        created = await self._one(sql.INSERT, params, conn)
        if created is not None:
            return created, True
        existing = await self._one(sql.BY_SOURCE, params, conn)
        assert existing is not None
        return existing, False

    async def start_upload(
        self, key: str, owner_id: str, display_name: str, declared_type: str | None
    ) -> None:
        """Remember the name the user gave an upload's object until it is completed (a
        second init of the same key keeps the latest)."""
        async with self._conn(None) as c:
            await c.execute(sql.REMEMBER_UPLOAD, (key, owner_id, display_name, declared_type))

    async def take_upload(self, key: str, owner_id: str, *, conn: Conn) -> str | None:
        """The display name remembered for the owner's upload of ``key``, forgotten in the
        caller's transaction; None when there is none (an upload from before names were
        kept)."""
        row = await (await conn.execute(sql.TAKE_UPLOAD, (key, owner_id))).fetchone()
        return None if row is None else str(row["display_name"])

    async def set_job(
        self, media_id: uuid.UUID, job_id: uuid.UUID, *, conn: Conn | None = None
    ) -> None:
        async with self._conn(conn) as c:
            await c.execute(sql.SET_JOB, (job_id, media_id))

    async def get(
        self, media_id: uuid.UUID, owner_id: str | None = None, *, conn: Conn | None = None
    ) -> MediaRecord | None:
        """The item, or None (also when it belongs to someone else)."""
        statement = sql.GET if owner_id is None else sql.GET_OWNED
        return await self._one(statement, {"id": media_id, "owner": owner_id}, conn)

    async def many(self, ids: Sequence[uuid.UUID]) -> list[MediaRecord]:
        """The items among ``ids`` that exist, in no particular order (one statement)."""
        if not ids:
            return []
        async with self._conn(None) as c:
            rows = await (await c.execute(sql.MANY, {"ids": list(ids)})).fetchall()
        return [MediaRecord.from_row(row) for row in rows]

    async def start_processing(self, media_id: uuid.UUID, job_id: uuid.UUID) -> MediaRecord | None:
        """pending/processing/failed -> processing; None when the item is gone, deleted or
        already past processing."""
        return await self._one(sql.START_PROCESSING, {"id": media_id, "job": job_id}, None)

    async def finish_processing(
        self,
        media_id: uuid.UUID,
        *,
        status: MediaStatus,
        values: Mapping[str, Any],
        conn: Conn,
    ) -> MediaRecord | None:
        """Store what processing produced and move to ``status`` (ready or in_review), unless
        the item was deleted meanwhile. ``values`` may carry ``original_filename``: the file
        name with the extension of the detected type."""
        params = {"original_filename": None, **values}
        for key in ("variants", "exif", "gps"):
            if params.get(key) is not None:
                params[key] = Jsonb(params[key])
        return await self._one(
            sql.FINISH_PROCESSING, {**params, "id": media_id, "status": status.value}, conn
        )

    async def fail(self, media_id: uuid.UUID, error: Mapping[str, JSON]) -> MediaRecord | None:
        return await self._one(sql.FAIL, {"id": media_id, "error": Jsonb(dict(error))}, None)

    async def duplicate_of(
        self, owner_id: str, media_id: uuid.UUID, sha256: str
    ) -> uuid.UUID | None:
        """The oldest other live item of the owner with the same source bytes."""
        async with self._conn(None) as c:
            row = await (await c.execute(sql.DUPLICATE_OF, (owner_id, sha256, media_id))).fetchone()
        return None if row is None else cast(uuid.UUID, row["id"])

    async def set_review(
        self,
        media_id: uuid.UUID,
        review: Mapping[str, JSON],
        *,
        status: MediaStatus | None = None,
        conn: Conn | None = None,
    ) -> MediaRecord | None:
        """Record a review outcome on an item in review; ``status`` moves it on (ready or
        rejected). None when the item is no longer in review."""
        return await self._one(
            sql.SET_REVIEW,
            {
                "id": media_id,
                "review": Jsonb(dict(review)),
                "status": None if status is None else status.value,
            },
            conn,
        )

    async def cut_over(
        self, new: MediaRecord, *, undo_window: float, conn: Conn
    ) -> MediaRecord | None:
        """The replacement ``new`` (now ready) takes the place of the item it replaces: the
        old one is hidden (deleted, purged after the undo window) and ``new`` inherits its
        sort order and its place (position and purpose) in its collections. Returns the old
        item as changed, or None when there was none to replace (it was deleted meanwhile:
        ``new`` simply stays)."""
        if new.replaces is None:
            return None
        old = await self._one(
            sql.REPLACE_OLD,
            {"old": new.replaces, "new": new.id, "owner": new.owner_id, "window": undo_window},
            conn,
        )
        if old is not None:
            await conn.execute(sql.INHERIT_SORT_ORDER, (old.sort_order, new.id))
            await conn.execute(sql.TAKE_ATTACHMENTS, {"old": old.id, "new": new.id})
        return old

    async def soft_delete(
        self, media_id: uuid.UUID, owner_id: str, *, undo_window: float, conn: Conn | None = None
    ) -> MediaRecord | None:
        """Hide the item at once; its objects are purged after ``undo_window`` seconds. An
        item already deleted is returned unchanged (deleting twice is one delete)."""
        changed = await self._one(
            sql.SOFT_DELETE,
            {"id": media_id, "owner": owner_id, "window": undo_window},
            conn,
        )
        return changed or await self.get(media_id, owner_id, conn=conn)

    async def restore(
        self, media_id: uuid.UUID, owner_id: str, *, conn: Conn | None = None
    ) -> MediaRecord | None:
        """Undo a delete inside its window; None when there is nothing to restore (not
        deleted, window over, or already purged)."""
        return await self._one(sql.RESTORE, {"id": media_id, "owner": owner_id}, conn)

    async def claim_purge(self, media_id: uuid.UUID) -> MediaRecord | None:
        """The deleted item when its undo window is over and it is not purged yet."""
        return await self._one(sql.CLAIM_PURGE, {"id": media_id}, None)

    async def mark_purged(self, media_id: uuid.UUID, *, conn: Conn | None = None) -> bool:
        """The item's objects are gone: mark it purged, detach it from its collections and
        drop what was computed from the image (perceptual hash, tags; the caller drops its
        embeddings with ``vectors.forget_embeddings``), in one transaction (the caller's,
        when ``conn`` is given). False when it was not deleted any more (restored meanwhile)
        or purged before: nothing changes."""
        if conn is None:
            async with self.transaction() as fresh:
                return await self.mark_purged(media_id, conn=fresh)
        marked = await conn.execute(sql.MARK_PURGED, (media_id,))
        if not marked.rowcount:
            return False
        await conn.execute(sql.DETACH_PURGED, (media_id,))
        await conn.execute(sql.FORGET_TAGS, (media_id,))
        return True

    async def page(
        self,
        owner_id: str,
        *,
        statuses: tuple[MediaStatus, ...] = (MediaStatus.READY,),
        purpose: str | None = None,
        key_prefix: str | None = None,
        tag: str | None = None,
        after: tuple[datetime, uuid.UUID] | None = None,
        limit: int = 50,
    ) -> list[MediaRecord]:
        """A page of the owner's items, newest first, after the keyset ``after``; with
        ``tag``, only items that have that tag (from any source)."""
        parts = [sql.PAGE]
        params: dict[str, Any] = {
            "owner": owner_id,
            "statuses": [s.value for s in statuses],
            "limit": limit,
        }
        if purpose is not None:
            parts.append(sql.PAGE_PURPOSE)
            params["purpose"] = purpose
        if key_prefix is not None:
            parts.append(sql.PAGE_KEY_PREFIX)
            params["like"] = _like_escape(key_prefix) + "%"
        if tag is not None:
            parts.append(sql.PAGE_TAG)
            params["tag"] = tag
        if after is not None:
            parts.append(sql.PAGE_AFTER)
            params["at"], params["id"] = after
        parts.append(sql.PAGE_ORDER)
        async with self._conn(None) as c:
            rows = await (await c.execute(" ".join(parts), params)).fetchall()
        return [MediaRecord.from_row(row) for row in rows]

    async def by_source_key(
        self, owner_id: str, key: str, *, include_deleted: bool = False
    ) -> MediaRecord | None:
        """The owner's item whose source object has this key (in any store)."""
        statement = sql.BY_SOURCE_KEY if include_deleted else sql.BY_SOURCE_KEY_LIVE
        return await self._one(statement + sql.NEWEST_ONE, {"owner": owner_id, "key": key}, None)

    async def lock_owner(self, owner_id: str, conn: Conn) -> None:
        """Serialise the owner's in-flight checks until ``conn``'s transaction ends (a
        transaction-scoped advisory lock on a 64-bit hash of the owner id), so a count and
        the insert it allows are atomic across concurrent requests."""
        await conn.execute(sql.LOCK_OWNER, (owner_id,))

    async def in_flight(self, owner_id: str, conn: Conn | None = None) -> int:
        """The owner's items still waiting for or in processing."""
        async with self._conn(conn) as c:
            row = await (await c.execute(sql.IN_FLIGHT, (owner_id,))).fetchone()
        return int(row["n"]) if row else 0

    async def upsert_ingested(
        self, conn: Conn, items: Sequence[IngestedMedia]
    ) -> dict[uuid.UUID, str | None]:
        """Write a batch of ingested items in one statement: a new id is inserted ``ready``
        (``processed_at`` now); an existing row of the same owner that is neither deleted,
        rejected nor purged takes the new values and becomes ``ready`` (a new version: same
        id, review and error cleared); a row of another owner, or a deleted, rejected or
        purged one, is left alone and is not in the result. Returns id -> the source
        locator the row had before when it differed (the caller deletes that object), else
        None. Raises ValueError when an
        id is listed twice. Assumes no other row of the owner has the same source locator
        (ingest derives it from the id): that breaks ``media_source_idx``."""
        ids = [item.id for item in items]
        if len(set(ids)) != len(ids):
            raise ValueError("items: an id is listed more than once")
        if not items:
            return {}
        params = {
            "ids": ids,
            "owners": [i.owner_id for i in items],
            "purposes": [i.purpose for i in items],
            "sources": [i.source_locator for i in items],
            "filenames": [i.original_filename for i in items],
            "types": [i.detected_type for i in items],
            "bytes": [i.bytes for i in items],
            "widths": [i.width for i in items],
            "heights": [i.height for i in items],
            "variants": [_jsonb(i.variants) for i in items],
            "blurs": [i.blur_data_url for i in items],
            "exifs": [_jsonb(i.exif) for i in items],
            "gps": [_jsonb(i.gps) for i in items],
            "sha256s": [i.sha256 for i in items],
        }
        rows = await (await conn.execute(sql.UPSERT_INGESTED, params)).fetchall()
        return {row["id"]: row["previous"] for row in rows}

    async def update_fields(
        self,
        media_id: uuid.UUID,
        owner_id: str,
        changes: Mapping[str, Any],
        *,
        conn: Conn | None = None,
    ) -> MediaRecord | None:
        """Change ``alt_text``, ``caption``, ``sort_order`` or ``purpose`` of a visible
        item."""
        assert set(changes) <= sql.EDITABLE
        if not changes:
            return await self.get(media_id, owner_id, conn=conn)
        assignments = ", ".join(f"{name} = %({name})s" for name in changes)
        return await self._one(
            sql.UPDATE_FIELDS.format(assignments=assignments),
            {**changes, "id": media_id, "owner": owner_id},
            conn,
        )

    async def set_understood(self, conn: Conn, hashes: Mapping[uuid.UUID, int | None]) -> None:
        """Record media.embed's results in the caller's transaction: each item's perceptual
        hash (None: none could be made) and ``understood_at`` now."""
        if hashes:
            params = {"ids": list(hashes), "hashes": list(hashes.values())}
            await conn.execute(sql.SET_UNDERSTOOD, params)

    async def existing(self, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, tuple[str, str]]:
        """The items among ``ids`` that exist: id -> (owner id, status), ``purged`` for a
        purged one. One statement (ingest asks before it writes over an item's objects)."""
        if not ids:
            return {}
        async with self._pool.connection() as conn:
            rows = await (await conn.execute(sql.EXISTING, {"ids": list(ids)})).fetchall()
        return {row["id"]: (row["owner_id"], row["status"]) for row in rows}


@asynccontextmanager
async def _transaction(pool: Pool) -> Any:
    async with pool.connection() as conn, conn.transaction():
        yield conn
