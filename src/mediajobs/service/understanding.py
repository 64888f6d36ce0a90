"""What one API process knows of image understanding: whether semantic search can answer
(a CLIP model, pgvector, an active embedding index of a model this process has), the
query vectors, and the status ``readyz`` shows. Built by the app's lifespan."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from mediajobs.db.pool import Pool
from mediajobs.db.vectors import EmbeddingIndex, EmbeddingIndexes, PgVector, detect_pgvector
from mediajobs.service.models import Understanding
from mediajobs.types import JSON
from mediajobs.vision.catalog import ModelCatalog
from mediajobs.vision.model import ClipModel, ModelInvalid

log = logging.getLogger(__name__)

INDEX_CACHE_SECONDS = 5.0  # how long the active index is trusted (a swap shows this fast)
# A text query that the model embeds faster than this runs on the event loop: handing it to
# a thread and back costs about as much (0.1-0.4 ms measured). Real CLIP text encoders take
# milliseconds and always go to a thread.
INLINE_TEXT_SECONDS = 0.0005


@dataclass(frozen=True)
class Semantic:
    """Whether semantic search can answer now: the active ``index`` and the text ``model``
    of its embeddings (None without one), or ``reason``, why not, for people."""

    index: EmbeddingIndex | None
    model: ClipModel | None
    reason: str | None


class SemanticSearch:
    """Semantic search's moving parts in one API process."""

    def __init__(self, pool: Pool, catalog: ModelCatalog) -> None:
        self.catalog = catalog
        self.indexes = EmbeddingIndexes(pool)
        self._pool = pool
        self._pgvector: PgVector | None = None
        self._active: tuple[float, EmbeddingIndex | None] | None = None
        self._warm: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Look for pgvector (installing it when the server offers it), and load the
        default model in the background so the first search does not wait for it."""
        self._pgvector = await detect_pgvector(self._pool)
        if not self._pgvector.available:
            log.info("semantic search is off: %s", self._pgvector.reason)
        if self.catalog.enabled:
            self._warm = asyncio.create_task(self._load_default())

    async def stop(self) -> None:
        if self._warm is not None:
            self._warm.cancel()

    async def _load_default(self) -> None:
        try:
            await self.catalog.get()
        except ModelInvalid as exc:
            log.error("the CLIP model cannot be loaded: %s", exc)

    @property
    def pgvector(self) -> PgVector:
        return self._pgvector or PgVector(None, "not checked yet")

    async def active_index(self) -> EmbeddingIndex | None:
        """The index search reads (cached for ``INDEX_CACHE_SECONDS``)."""
        if not self.pgvector.available:
            return None
        cached = self._active
        if cached is None or time.monotonic() - cached[0] > INDEX_CACHE_SECONDS:
            cached = (time.monotonic(), await self.indexes.active())
            self._active = cached
        return cached[1]

    async def semantic(self, *, need_model: bool = True) -> Semantic:
        """Whether semantic search can answer, and with what. ``need_model``: False for a
        search by an item's stored vector (``/similar``), which needs no text model."""
        if need_model and not self.catalog.enabled:
            return Semantic(
                None, None, "no CLIP model is configured (MEDIAJOBS_CLIP_MODEL_DIR is unset)"
            )
        if not self.pgvector.available:
            return Semantic(None, None, self.pgvector.reason)
        index = await self.active_index()
        if index is None:
            return Semantic(None, None, "no image has been embedded yet")
        if not need_model:
            return Semantic(index, None, None)
        try:
            self.catalog.names()
        except ModelInvalid as exc:  # a config.json that cannot be read: say so, not "absent"
            return Semantic(None, None, f"the CLIP model cannot be loaded: {exc}")
        if not self.catalog.has(index.model):
            return Semantic(
                None,
                None,
                f"the library's embeddings are of model {index.model!r}, which this process "
                "does not have (list its directory in MEDIAJOBS_CLIP_MODEL_DIR)",
            )
        try:
            model = await self.catalog.get(index.model)
        except ModelInvalid as exc:
            return Semantic(None, None, f"the CLIP model cannot be loaded: {exc}")
        return Semantic(index, model, None)

    async def text_vector(self, model: ClipModel, text: str) -> npt.NDArray[np.float32]:
        """The unit vector of a text query (the model's LRU cache answers repeats without
        leaving the event loop; a new text is embedded in a thread unless the model embeds
        one in under ``INLINE_TEXT_SECONDS``)."""
        cached = model.cached_text(text)
        if cached is not None:
            return cached
        if model.text_seconds < INLINE_TEXT_SECONDS:
            return model.encode_text(text)
        return await asyncio.to_thread(model.encode_text, text)

    async def status(self, *, within: float) -> Understanding:
        """What ``readyz`` says about image understanding; never raises (a database that
        does not answer ``within`` seconds is its ``reason``)."""
        try:
            async with asyncio.timeout(within):
                state = await self.semantic()
                active = state.index or await self.active_index()
        except Exception as exc:  # readyz reports the database itself; say why here
            state, active = Semantic(None, None, f"unknown: {type(exc).__name__}"), None
        index: dict[str, JSON] | None = None
        if active is not None:
            index = {"model": active.model, "dimensions": active.dimensions, "id": active.id}
        try:
            default = self.catalog.default_name
        except ModelInvalid:
            default = None
        return Understanding(
            semantic=state.model is not None,
            model=default,
            pgvector=self.pgvector.version,
            index=index,
            reason=state.reason,
        )
