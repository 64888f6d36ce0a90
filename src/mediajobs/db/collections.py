"""Collections: the ordered media attached to one entity of the product (``listing/8412``,
``artist/ada``), each attachment with a purpose (``profile``, ``gallery``, ``cover``, ...).

An entity belongs to the owner who first attaches media to it. A sync replaces the whole
ordered list in one transaction (attach, detach, reorder) under the entity's row lock, and
names the version it read: of two syncs from one version exactly one applies, the other is
``stale_collection``. A sync that changes nothing keeps the version, so repeating it is
harmless. The statements live in ``db/collections_sql.py``.

A deleted item keeps its attachment through its undo window, so a restore puts it back in
its place; reads decide what they show (``view``: the owner's every item, or only the ready
ones, which have passed the review gate). A sync may list such an item again (it keeps its
place) and detaches it by leaving it out.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mediajobs.db import collections_sql as sql
from mediajobs.db.media import Conn, MediaRecord
from mediajobs.db.pool import Pool
from mediajobs.errors import MediaJobsError

PROFILE = "profile"  # at most one per entity; the entity's profile image derives from it
# An entity's type and id (``listing/8412``), as migration 0006 checks them.
ENTITY_TYPE_PATTERN = r"[a-z][a-z0-9_-]{0,31}"
ENTITY_ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._~-]{0,127}"


class CollectionRefused(MediaJobsError):
    """A sync that cannot apply; ``code`` says why:

    - ``entity_not_found``: the entity belongs to another owner (it answers as missing);
    - ``stale_collection``: the collection changed since the version the sync names;
    - ``media_not_found``: an item is not the owner's, or is purged, or is deleted and not
      already in this collection;
    - ``duplicate_media``: an item is listed twice;
    - ``second_profile``: more than one item has the purpose ``profile``.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Attachment:
    """One item of a collection: the media item, its purpose and its 0-based position."""

    media_id: uuid.UUID
    purpose: str
    position: int


@dataclass(frozen=True)
class Collection:
    """An entity's collection: its owner, its version (the ETag) and its items in order."""

    entity_type: str
    entity_id: str
    owner_id: str
    version: int
    items: tuple[Attachment, ...]


@dataclass(frozen=True)
class EntityRef:
    """An entity whose collection holds a given item, at its collection's ``version``."""

    entity_type: str
    entity_id: str
    owner_id: str
    version: int


@dataclass(frozen=True)
class CollectionView:
    """A collection with its items' media rows, in order: ``items`` pairs each attachment
    with its ``MediaRecord``."""

    collection: Collection
    items: tuple[tuple[Attachment, MediaRecord], ...]


OnChange = Callable[[Conn, Collection], Awaitable[None]]


class CollectionRepository:
    """Reads and syncs collections on ``pool``."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    async def get(self, entity_type: str, entity_id: str) -> Collection | None:
        """The collection, every attachment included (deleted items too: the reader decides
        what it may show); None when no media was ever attached to the entity."""
        key = {"type": entity_type, "id": entity_id}
        async with self._pool.connection() as conn:
            entity = await (await conn.execute(sql.SELECT_ENTITY, key)).fetchone()
            if entity is None:
                return None
            rows = await (await conn.execute(sql.SELECT_ATTACHMENTS, key)).fetchall()
        return _collection(entity, rows)

    async def view(self, entity_type: str, entity_id: str) -> CollectionView | None:
        """The collection with every item's media row, whatever its status (the owner's
        view; one query for all items). None when no media was ever attached to the
        entity."""
        key = {"type": entity_type, "id": entity_id}
        async with self._pool.connection() as conn:
            entity = await (await conn.execute(sql.SELECT_ENTITY, key)).fetchone()
            if entity is None:
                return None
            rows = await (await conn.execute(sql.SELECT_MEDIA, key)).fetchall()
        return _view(entity, rows)

    async def public_view(
        self, entity_type: str, entity_id: str
    ) -> tuple[str, CollectionView] | None:
        """What the public may see of the collection: only items that are ready (processed,
        and past the review gate when review is on), with the ``public_fingerprint`` of
        exactly these rows (all read in one REPEATABLE READ snapshot, so the two always
        agree). None when no media was ever attached to the entity."""
        key = {"type": entity_type, "id": entity_id}
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            found = await (await conn.execute(sql.PUBLIC_FINGERPRINT, key)).fetchone()
            entity = await (await conn.execute(sql.SELECT_ENTITY, key)).fetchone()
            if found is None or entity is None:
                return None
            rows = await (await conn.execute(sql.SELECT_READY_MEDIA, key)).fetchall()
        return str(found["fingerprint"]), _view(entity, rows)

    async def public_fingerprint(self, entity_type: str, entity_id: str) -> str | None:
        """A short text that changes whenever the public read of the collection would (an
        item becoming ready or leaving, a reorder, any change of a shown item's row); None
        when the entity does not exist. One small query: a cache of the rendered public
        read checks it instead of reading every row."""
        key = {"type": entity_type, "id": entity_id}
        async with self._pool.connection() as conn:
            row = await (await conn.execute(sql.PUBLIC_FINGERPRINT, key)).fetchone()
        return None if row is None else str(row["fingerprint"])

    @staticmethod
    async def containing(conn: Conn, media_id: uuid.UUID) -> list[EntityRef]:
        """Inside the caller's transaction: the entities whose collections hold
        ``media_id``, with their versions, in key order."""
        rows = await (await conn.execute(sql.CONTAINING, (media_id,))).fetchall()
        return [
            EntityRef(r["entity_type"], r["entity_id"], r["owner_id"], r["version"]) for r in rows
        ]

    @staticmethod
    async def entities(conn: Conn, refs: Sequence[EntityRef]) -> list[EntityRef]:
        """Inside the caller's transaction: ``refs`` as they are now (their versions read
        again), in key order; entities that no longer exist are left out."""
        if not refs:
            return []
        params = {"types": [r.entity_type for r in refs], "ids": [r.entity_id for r in refs]}
        rows = await (await conn.execute(sql.ENTITIES, params)).fetchall()
        return [
            EntityRef(r["entity_type"], r["entity_id"], r["owner_id"], r["version"]) for r in rows
        ]

    async def sync(
        self,
        entity_type: str,
        entity_id: str,
        owner_id: str,
        items: Sequence[tuple[uuid.UUID, str]],
        *,
        if_version: int | frozenset[int] | None = None,
        if_exists: bool = False,
        manage_any: bool = False,
        on_change: OnChange | None = None,
    ) -> Collection:
        """Make the collection exactly ``items`` (``(media_id, purpose)`` in order) and
        return it. ``if_version``: apply only if the collection is still at that version (or
        one of those versions; a collection nobody has made is at 0). ``if_exists``: apply
        only to a collection that exists already. Both are checked after the owner, under
        the entity's lock, so another user learns nothing from them (404 first).
        ``manage_any``: an admin may sync another owner's entity (with the owner's media).
        ``on_change(conn, collection)`` runs inside the transaction when the sync changed
        the collection (to record its event with it). Raises ``CollectionRefused``."""
        ids = [media_id for media_id, _ in items]
        if len(set(ids)) != len(ids):
            raise CollectionRefused("duplicate_media", "an item is listed more than once")
        if sum(1 for _, purpose in items if purpose == PROFILE) > 1:
            raise CollectionRefused("second_profile", "at most one item may be the profile")
        versions = frozenset({if_version}) if isinstance(if_version, int) else if_version
        key = {"type": entity_type, "id": entity_id}
        async with self._pool.connection() as conn, conn.transaction():
            if not items and await (await conn.execute(sql.SELECT_ENTITY, key)).fetchone() is None:
                # Nothing to attach to an entity nobody has: it stays nobody's.
                if if_exists or (versions is not None and 0 not in versions):
                    raise CollectionRefused("stale_collection", "the collection is new")
                return Collection(entity_type, entity_id, owner_id, 0, ())
            claimed = await conn.execute(sql.CLAIM_ENTITY, {**key, "owner": owner_id})
            entity = await (await conn.execute(sql.LOCK_ENTITY, key)).fetchone()
            assert entity is not None  # just inserted or already there; never deleted
            owner = entity["owner_id"]
            if owner != owner_id and not manage_any:
                raise CollectionRefused("entity_not_found", "no such entity")
            if if_exists and claimed.rowcount:
                raise CollectionRefused("stale_collection", "the collection is new")
            if versions is not None and entity["version"] not in versions:
                raise CollectionRefused(
                    "stale_collection",
                    f"the collection is at version {entity['version']}, not one If-Match names",
                )
            found = await (
                await conn.execute(sql.ATTACHABLE, {**key, "ids": ids, "owner": owner})
            ).fetchall()
            missing = set(ids) - {row["id"] for row in found}
            if missing:
                raise CollectionRefused("media_not_found", f"no such media: {min(missing)}")
            rows = await (await conn.execute(sql.SELECT_ATTACHMENTS, key)).fetchall()
            current = [(row["media_id"], row["purpose"]) for row in rows]
            if current == list(items):
                return _collection(entity, rows)  # nothing changes: the version stays
            await conn.execute(sql.DETACH_ALL, key)
            await conn.execute(
                sql.ATTACH, {**key, "media": ids, "purposes": [purpose for _, purpose in items]}
            )
            bumped = await (await conn.execute(sql.BUMP_VERSION, key)).fetchone()
            assert bumped is not None
            rows = await (await conn.execute(sql.SELECT_ATTACHMENTS, key)).fetchall()
            collection = _collection({**entity, "version": bumped["version"]}, rows)
            if on_change is not None:
                await on_change(conn, collection)
        return collection


def _view(entity: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> CollectionView:
    """The entity and its attachments joined with their media rows (``attached_purpose``
    and ``attached_position`` beside the ``media`` columns)."""
    pairs = []
    for row in rows:
        values = dict(row)
        attachment = Attachment(
            values["id"], values.pop("attached_purpose"), values.pop("attached_position")
        )
        pairs.append((attachment, MediaRecord.from_row(values)))
    collection = Collection(
        entity_type=entity["entity_type"],
        entity_id=entity["entity_id"],
        owner_id=entity["owner_id"],
        version=entity["version"],
        items=tuple(attachment for attachment, _ in pairs),
    )
    return CollectionView(collection, tuple(pairs))


def _collection(entity: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> Collection:
    return Collection(
        entity_type=entity["entity_type"],
        entity_id=entity["entity_id"],
        owner_id=entity["owner_id"],
        version=entity["version"],
        items=tuple(Attachment(r["media_id"], r["purpose"], r["position"]) for r in rows),
    )
