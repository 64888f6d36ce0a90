"""Search without vectors: full-text over what people wrote and what tagging found (the
answer of ``GET /media/search`` when there is no model or no pgvector), and near-duplicates
by perceptual hash and sha256. Owner-scoped, ready items only (the review gate)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from mediajobs.db import search_sql as sql
from mediajobs.db.media import MediaRecord
from mediajobs.db.pool import Pool
from mediajobs.vision.phash import NEAR_DUPLICATE_BITS


@dataclass(frozen=True)
class TextHit:
    """A full-text hit and its rank (``ts_rank_cd``: higher is better, unbounded)."""

    media: MediaRecord
    rank: float


@dataclass(frozen=True)
class Duplicate:
    """A near-duplicate: ``bits`` of perceptual hash that differ (0-64), ``identical`` when
    the source bytes are the same (sha256)."""

    media: MediaRecord
    bits: int
    identical: bool


def _split(row: Any, *extra: str) -> tuple[MediaRecord, dict[str, Any]]:
    values = dict(row)
    taken = {name: values.pop(name) for name in extra}
    return MediaRecord.from_row(values), taken


class SearchRepository:
    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    async def text(
        self, owner_id: str, query: str, *, limit: int, offset: int = 0
    ) -> list[TextHit]:
        """The owner's ready items matching ``query`` (web-search syntax: words, "a
        phrase", -word, or), best ranked first, against alt text, caption, tags and file
        name with English stemming (``dogs`` finds ``dog``)."""
        params = {"owner": owner_id, "q": query, "limit": limit, "offset": offset}
        async with self._pool.connection() as conn:
            rows = await (await conn.execute(sql.TEXT_SEARCH, params)).fetchall()
        hits = []
        for row in rows:
            media, extra = _split(row, "rank")
            hits.append(TextHit(media, float(extra["rank"])))
        return hits

    async def duplicates(
        self,
        owner_id: str,
        media_id: uuid.UUID,
        *,
        max_bits: int = NEAR_DUPLICATE_BITS,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Duplicate]:
        """The owner's other ready items within ``max_bits`` of ``media_id``'s perceptual
        hash, or with its sha256; nearest first. Empty for an item of another owner."""
        params = {
            "owner": owner_id,
            "id": media_id,
            "bits": max_bits,
            "limit": limit,
            "offset": offset,
        }
        async with self._pool.connection() as conn:
            rows = await (await conn.execute(sql.DUPLICATES, params)).fetchall()
        found = []
        for row in rows:
            media, extra = _split(row, "bits", "identical")
            found.append(Duplicate(media, int(extra["bits"]), bool(extra["identical"])))
        return found
