"""Tags of media items (``media_tags``) and their copy on the row (``media.tags_text``),
which the full-text index reads. Every statement here that changes tags rewrites
``tags_text`` of the items it touched in the same statement, so the two never disagree."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import psycopg
from psycopg.rows import DictRow

from mediajobs.db.pool import Pool
from mediajobs.errors import MediaJobsError
from mediajobs.vision.tags import Tag, TagSource

Conn = psycopg.AsyncConnection[DictRow]

# MAX_USER_TAGS: an owner's own tags per item (a bound on what one PATCH can write).
MAX_USER_TAGS = 100

# tags_text: the item's distinct tags in alphabetical order, one per line.
_TAGS_TEXT = """
UPDATE media AS m SET tags_text = coalesce((
    SELECT string_agg(t.tag, E'\\n' ORDER BY t.tag)
    FROM (SELECT DISTINCT tag FROM media_tags WHERE media_id = m.id) AS t
), ''), updated_at = now()
WHERE m.id = ANY(%(ids)s::uuid[])
"""

# Replace the tags of some sources of a batch of items: delete theirs, insert the new ones
# (a tag listed twice for an item and source keeps its highest confidence), then rewrite
# tags_text. Items that are gone are skipped (the insert joins media).
REPLACE = """
WITH gone AS (
    DELETE FROM media_tags
    WHERE media_id = ANY(%(ids)s::uuid[]) AND source = ANY(%(sources)s::text[])
),
input AS (
    SELECT DISTINCT ON (media_id, source, tag) media_id, tag, confidence, source
    FROM unnest(%(media)s::uuid[], %(tags)s::text[], %(confidences)s::real[],
                %(tag_sources)s::text[]) AS i (media_id, tag, confidence, source)
    ORDER BY media_id, source, tag, confidence DESC NULLS LAST
)
INSERT INTO media_tags (media_id, tag, confidence, source)
SELECT i.media_id, i.tag, i.confidence, i.source
FROM input AS i JOIN media AS m ON m.id = i.media_id
ON CONFLICT (media_id, source, tag) DO UPDATE SET confidence = excluded.confidence
"""

ADD_USER = """
INSERT INTO media_tags (media_id, tag, source)
SELECT %(id)s, tag, 'user' FROM unnest(%(tags)s::text[]) AS tag
ON CONFLICT (media_id, source, tag) DO NOTHING
"""
REMOVE_USER = """
DELETE FROM media_tags WHERE media_id = %(id)s AND source = 'user' AND tag = ANY(%(tags)s::text[])
"""
COUNT_USER = "SELECT count(*) AS n FROM media_tags WHERE media_id = %(id)s AND source = 'user'"
OF_ITEM = """
SELECT tag, source, confidence FROM media_tags WHERE media_id = %(id)s
ORDER BY source, confidence DESC NULLS LAST, tag
"""


class TooManyTags(MediaJobsError):
    """An edit that would give an item more than ``MAX_USER_TAGS`` user tags."""


class TagRepository:
    """Reads and writes ``media_tags``; owner checks are the caller's (the media row)."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    async def replace(
        self,
        conn: Conn,
        tags: Mapping[uuid.UUID, Sequence[Tag]],
        sources: Collection[TagSource],
    ) -> None:
        """For each item of ``tags``, replace its tags of ``sources`` with the ones given
        (an empty list clears them), in the caller's transaction."""
        if not tags:
            return
        media: list[uuid.UUID] = []
        texts: list[str] = []
        confidences: list[float | None] = []
        tag_sources: list[str] = []
        for media_id, item_tags in tags.items():
            for tag in item_tags:
                media.append(media_id)
                texts.append(tag.tag)
                confidences.append(tag.confidence)
                tag_sources.append(tag.source.value)
        params: dict[str, Any] = {
            "ids": list(tags),
            "sources": [s.value for s in sources],
            "media": media,
            "tags": texts,
            "confidences": confidences,
            "tag_sources": tag_sources,
        }
        await conn.execute(REPLACE, params)
        await conn.execute(_TAGS_TEXT, {"ids": list(tags)})

    async def edit_user_tags(
        self,
        conn: Conn,
        media_id: uuid.UUID,
        *,
        add: Sequence[str] = (),
        remove: Sequence[str] = (),
    ) -> None:
        """Add and remove the owner's own tags of one item (already normalised), in the
        caller's transaction. Removing a tag the item does not have is no error. Raises
        ``TooManyTags`` (the transaction should roll back) past ``MAX_USER_TAGS``."""
        params = {"id": media_id}
        if remove:
            await conn.execute(REMOVE_USER, {**params, "tags": list(remove)})
        if add:
            await conn.execute(ADD_USER, {**params, "tags": list(add)})
            row = await (await conn.execute(COUNT_USER, params)).fetchone()
            if row is not None and int(row["n"]) > MAX_USER_TAGS:
                raise TooManyTags(f"an item holds at most {MAX_USER_TAGS} tags of its owner")
        await conn.execute(_TAGS_TEXT, {"ids": [media_id]})

    async def of_item(self, media_id: uuid.UUID, *, conn: Conn | None = None) -> list[Tag]:
        """The item's tags, by source, most confident first."""
        if conn is None:
            async with self._pool.connection() as fresh:
                return await self.of_item(media_id, conn=fresh)
        rows = await (await conn.execute(OF_ITEM, {"id": media_id})).fetchall()
        return [Tag(row["tag"], TagSource(row["source"]), row["confidence"]) for row in rows]
