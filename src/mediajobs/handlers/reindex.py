"""A model switch (``mediajobs models reindex``): embed every ready image with a model into
an index of its own, then make that index the one search reads.

Resumable by construction: what is done is the index's rows, and each pass embeds the ready
images the index lacks, so a reindex that stopped (Ctrl-C, a crash, a lost connection) and
is run again goes on where it was. Search keeps answering from the active index until the
new one is complete: the swap is one transaction (``EmbeddingIndexes.activate``), after the
HNSW index is built. Workers that have the new model write new items to both indexes
meanwhile, so none is missed at the swap.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from mediajobs.db.media import MediaRepository
from mediajobs.db.pool import Pool
from mediajobs.db.tags import TagRepository
from mediajobs.db.vectors import EmbeddingIndex, EmbeddingIndexes, IndexState, detect_pgvector
from mediajobs.errors import MediaJobsError
from mediajobs.handlers.understand import fetch_variants, understand
from mediajobs.storage import StoreRegistry
from mediajobs.vision.catalog import ModelCatalog
from mediajobs.vision.tags import TagSource

PAGE = 256  # ids read per query; embedded in batches of the model's batch size


class ReindexRefused(MediaJobsError):
    """A reindex that cannot start: no pgvector, or a model this process cannot load.
    ``code``: ``pgvector_missing`` or the model's (``model_unknown``, ...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class ReindexProgress:
    """Where a reindex is: ``total`` items the index lacked when a pass began, ``done``
    embedded since, ``failed`` left out (no variant, a missing object, an undecodable
    variant; a later reindex tries them again)."""

    index: EmbeddingIndex
    total: int = 0
    done: int = 0
    phase: str = "embedding"  # embedding -> building the HNSW index -> swapped | caught up
    retired: EmbeddingIndex | None = None
    failed_ids: set[uuid.UUID] = field(default_factory=set)

    @property
    def failed(self) -> int:
        return len(self.failed_ids)


async def reindex(
    pool: Pool,
    stores: StoreRegistry,
    catalog: ModelCatalog,
    model_name: str | None = None,
    *,
    on_progress: Callable[[ReindexProgress], None] = lambda _: None,
    page: int = PAGE,
) -> ReindexProgress:
    """Embed every ready image with ``model_name`` (None: the first configured model) and
    make its index the active one. When the active index already is that model's, only
    the items it lacks are embedded (a catch-up). Raises ``ReindexRefused``."""
    found = await detect_pgvector(pool)
    if not found.available:
        raise ReindexRefused("pgvector_missing", f"embeddings need pgvector: {found.reason}")
    try:
        model = await catalog.get(model_name)
    except MediaJobsError as exc:
        raise ReindexRefused(getattr(exc, "code", "model_invalid"), str(exc)) from None
    indexes = EmbeddingIndexes(pool)
    active = await indexes.active()
    if active is None:
        first = await indexes.ensure_first(model.name, model.embed_dim)
        if first is None:  # a reindex of another model began meanwhile: resume it
            target = await indexes.start_building(model.name, model.embed_dim)
        else:
            target = first
    elif active.model == model.name and active.dimensions == model.embed_dim:
        target = active
    else:
        target = await indexes.start_building(model.name, model.embed_dim)
    progress = ReindexProgress(target)
    media, tags = MediaRepository(pool), TagRepository(pool)
    side = model.info.image_size
    while True:  # passes: until one finds nothing new to embed
        missing = await indexes.count_missing(target)
        progress.total = progress.done + missing - len(progress.failed_ids)
        on_progress(progress)
        embedded_this_pass = 0
        after: uuid.UUID | None = None
        while ids := await indexes.missing(target, after=after, limit=page):
            after = ids[-1]
            todo = [i for i in ids if i not in progress.failed_ids]
            records = await media.many(todo)
            items = await fetch_variants(stores, records, side)
            await asyncio.to_thread(understand, items, [model], model.name, catalog, side)
            embedded = [i for i in items if model.name in i.vectors]
            if embedded:
                async with media.transaction() as conn:
                    vectors = np.stack([i.vectors[model.name] for i in embedded])
                    await indexes.upsert(conn, target, [i.record.id for i in embedded], vectors)
                    await tags.replace(
                        conn,
                        {i.record.id: i.clip_tags or [] for i in embedded},
                        (TagSource.CLIP,),
                    )
            done_ids = {i.record.id for i in embedded}
            progress.failed_ids |= set(todo) - done_ids
            progress.done += len(done_ids)
            embedded_this_pass += len(done_ids)
            on_progress(progress)
        if embedded_this_pass == 0:
            break
    if target.state is IndexState.BUILDING:
        progress.phase = "building the HNSW index"
        on_progress(progress)
        await indexes.build_hnsw(target)
        progress.retired = await indexes.activate(target)
        progress.phase = "swapped"
    else:
        progress.phase = "caught up"
    on_progress(progress)
    return progress
