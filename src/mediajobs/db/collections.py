"""Collections: the ordered media attached to one entity of the product (``listing/8412``,
``artist/ada``), each attachment with a purpose (``profile``, ``gallery``, ``cover``, ...).

An entity belongs to the owner who first attaches media to it. A sync replaces the whole
ordered list in one transaction (attach, detach, reorder) under the entity's row lock, and
names the version it read: of two syncs from one version exactly one applies, the other is
``stale_collection``. A sync that changes nothing keeps the version, so repeating it is
harmless. The statements live in ``db/collections_sql.py``.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mediajobs.db import collections_sql as sql
from mediajobs.db.pool import Pool
from mediajobs.errors import MediaJobsError

PROFILE = "profile"  # at most one per entity; the entity's profile image derives from it


class CollectionRefused(MediaJobsError):
    """A sync that cannot apply; ``code`` says why:

    - ``entity_not_found``: the entity belongs to another owner (it answers as missing);
    - ``stale_collection``: the collection changed since the version the sync names;
    - ``media_not_found``: an item is not the owner's, or is deleted or purged;
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

    async def sync(
        self,
        entity_type: str,
        entity_id: str,
        owner_id: str,
        items: Sequence[tuple[uuid.UUID, str]],
        *,
        if_version: int | None = None,
        manage_any: bool = False,
    ) -> Collection:
        """Make the collection exactly ``items`` (``(media_id, purpose)`` in order) and
        return it. ``if_version``: apply only if the collection is still at that version.
        ``manage_any``: an admin may sync another owner's entity (with the owner's media).
        Raises ``CollectionRefused``."""
        ids = [media_id for media_id, _ in items]
        if len(set(ids)) != len(ids):
            raise CollectionRefused("duplicate_media", "an item is listed more than once")
        if sum(1 for _, purpose in items if purpose == PROFILE) > 1:
            raise CollectionRefused("second_profile", "at most one item may be the profile")
        key = {"type": entity_type, "id": entity_id}
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute(sql.CLAIM_ENTITY, {**key, "owner": owner_id})
            entity = await (await conn.execute(sql.LOCK_ENTITY, key)).fetchone()
            assert entity is not None  # just inserted or already there; never deleted
            owner = entity["owner_id"]
            if owner != owner_id and not manage_any:
                raise CollectionRefused("entity_not_found", "no such entity")
            if if_version is not None and entity["version"] != if_version:
                raise CollectionRefused(
                    "stale_collection",
                    f"the collection is at version {entity['version']}, not {if_version}",
                )
            found = await (
                await conn.execute(sql.ATTACHABLE, {"ids": ids, "owner": owner})
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
        return _collection({**entity, "version": bumped["version"]}, rows)


def _collection(entity: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> Collection:
    return Collection(
        entity_type=entity["entity_type"],
        entity_id=entity["entity_id"],
        owner_id=entity["owner_id"],
        version=entity["version"],
        items=tuple(Attachment(r["media_id"], r["purpose"], r["position"]) for r in rows),
    )
