"""``media.embed``: image understanding of ready images, a batch per job.

For each item it reads one small variant (the smallest whose shorter side covers the
model's input; decoding a 320-pixel WebP costs a fraction of the original), then, in a
worker thread: the perceptual hash, the tags that need no model (orientation, camera, year,
dominant colours), and with a CLIP model the embeddings and the zero-shot tags. One
transaction writes it all: hashes, tags (each source replaced), a vector per embedding
index whose model this process has, and the ingest files of these items move ``indexed``
-> ``ai_done``.

Enqueued (``enqueue_understanding``) in the transaction that makes items ready: a processed
upload, a review that allows one, an ingest batch (its items in one job). Low priority
(``kinds.MEDIA_EMBED_PRIORITY``): it runs after interactive work and bulk ingest. Without a
model it still hashes and tags; without pgvector it still makes CLIP tags; what is off is
in its result (``model``, ``vectors``) and in ``readyz``.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from PIL import Image

from mediajobs.db.ingest import IngestRepository
from mediajobs.db.media import MediaRecord, MediaRepository, MediaStatus
from mediajobs.db.pool import Pool
from mediajobs.db.tags import TagRepository
from mediajobs.db.vectors import EmbeddingIndex, EmbeddingIndexes, PgVector, detect_pgvector
from mediajobs.errors import JobFailed, ObjectNotFound, Retry, StorageUnavailable
from mediajobs.queue import kinds
from mediajobs.queue.models import Job, JobSpec
from mediajobs.queue.queue import JobQueue
from mediajobs.queue.registry import JobContext
from mediajobs.storage import StoreRegistry
from mediajobs.storage.base import Locator
from mediajobs.types import JSON
from mediajobs.vision.catalog import ModelCatalog
from mediajobs.vision.model import ClipModel, ModelInvalid
from mediajobs.vision.phash import perceptual_hash
from mediajobs.vision.tags import Tag, TagSource, colour_tags, exif_tags

log = logging.getLogger(__name__)

MAX_ITEMS = 256  # media ids one media.embed job takes
DOWNLOADS = 8  # variants fetched at once
INDEX_CACHE_SECONDS = 10.0  # how long the registry of embedding indexes is trusted
MODEL_FREE = (TagSource.EXIF, TagSource.COLOUR)
# The side a variant needs when there is no model: the colour tags read 64 x 64 and the
# hash 32 x 32, so any thumbnail will do.
_NO_MODEL_SIDE = 64


async def enqueue_understanding(
    queue: JobQueue, conn: Any, owner_id: str, media_ids: Sequence[uuid.UUID]
) -> None:
    """Queue ``media.embed`` for items that just became ready, in the caller's transaction
    (one job per ``MAX_ITEMS``)."""
    ids = [str(i) for i in media_ids]
    for start in range(0, len(ids), MAX_ITEMS):
        chunk = ids[start : start + MAX_ITEMS]
        await queue.enqueue(
            JobSpec(
                kinds.MEDIA_EMBED,
                owner_id,
                {"mediaIds": list(chunk)},
                priority=kinds.MEDIA_EMBED_PRIORITY,
            ),
            conn=conn,
        )


def pick_variant(record: MediaRecord, min_side: int) -> Locator | None:
    """The smallest variant whose shorter side is at least ``min_side`` pixels, else the
    largest; None when the item has no variant."""
    variants = [v for v in record.variants.values() if isinstance(v, dict) and "locator" in v]
    if not variants:
        return None
    by_area = sorted(variants, key=lambda v: int(v.get("width", 0)) * int(v.get("height", 0)))
    for variant in by_area:
        if min(int(variant.get("width", 0)), int(variant.get("height", 0))) >= min_side:
            return Locator.parse(variant["locator"])
    return Locator.parse(by_area[-1]["locator"])


@dataclass
class Understood:
    """One item on its way through ``understand``: its variant's bytes in, its hash, tags
    and vectors (model name -> unit vector) out; ``error`` when the variant would not
    decode."""

    record: MediaRecord
    data: bytes
    phash: int | None = None
    tags: list[Tag] = field(default_factory=list)
    clip_tags: list[Tag] | None = None
    vectors: dict[str, npt.NDArray[np.float32]] = field(default_factory=dict)  # model -> [d]
    error: str | None = None


def decode_variant(data: bytes, side: int) -> Image.Image:
    """A variant's bytes as an RGB image; a JPEG is decoded at a reduced scale (``draft``)
    when it stays at least ``side`` pixels."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        image = Image.open(io.BytesIO(data))
        image.draft("RGB", (side, side))  # JPEG: decode at a reduced scale when it can
        return image.convert("RGB")


def understand(
    items: list[Understood],
    models: Sequence[ClipModel],
    tagger_model: str | None,
    catalog: ModelCatalog,
    side: int,
) -> None:
    """The CPU part, run in a worker thread: decode (at about ``side`` pixels), hash, tag,
    and embed with each of ``models`` (zero-shot tags from ``tagger_model``), in place."""
    decoded: list[tuple[Understood, Image.Image]] = []
    for item in items:
        try:
            image = decode_variant(item.data, side)
        except Exception as exc:  # a variant we wrote ourselves: corrupt in storage
            item.error = f"the variant cannot be decoded ({exc})"
            continue
        record = item.record
        # The hash reads 32 x 32 greys and the colours 64 x 64: one small copy serves both.
        small = image.copy()
        small.thumbnail((64, 64), Image.Resampling.BILINEAR, reducing_gap=2.0)
        item.phash = perceptual_hash(small)
        item.tags = exif_tags(
            record.width or image.width, record.height or image.height, record.exif
        ) + colour_tags(small)
        decoded.append((item, image))
    if not decoded:
        return
    for model in models:
        pixels = np.stack([model.preprocess(image) for _, image in decoded])
        vectors = model.encode_pixels(pixels)
        for (item, _), vector in zip(decoded, vectors, strict=True):
            item.vectors[model.name] = vector
        if model.name == tagger_model:
            tagged = catalog.tagger(model.name).tag(vectors)
            for (item, _), tags in zip(decoded, tagged, strict=True):
                item.clip_tags = tags


async def fetch_variants(
    stores: StoreRegistry, records: Sequence[MediaRecord], side: int
) -> list[Understood]:
    """The bytes of each item's ``pick_variant`` (``DOWNLOADS`` at a time); an item without
    a variant or whose object is missing is left out (and logged). Raises ``Retry`` when
    storage is unavailable."""
    gate = asyncio.Semaphore(DOWNLOADS)

    async def fetch(record: MediaRecord) -> Understood | None:
        locator = pick_variant(record, side)
        if locator is None:
            return None
        async with gate:
            try:
                return Understood(record, await stores.download(locator))
            except ObjectNotFound:
                log.warning("media %s: its variant %s is missing", record.id, locator)
                return None
            except StorageUnavailable as exc:
                raise Retry(f"storage: {exc}") from None

    fetched = await asyncio.gather(*(fetch(r) for r in records))
    return [item for item in fetched if item is not None]


class UnderstandHandler:
    """``media.embed`` (see the module docstring). ``catalog``: the models this process
    may load (none configured: hashes and model-free tags only)."""

    def __init__(
        self,
        *,
        pool: Pool,
        media: MediaRepository,
        tags: TagRepository,
        ingest: IngestRepository,
        stores: StoreRegistry,
        catalog: ModelCatalog,
    ) -> None:
        self.pool = pool
        self.media = media
        self.tags = tags
        self.ingest = ingest
        self.stores = stores
        self.catalog = catalog
        self.indexes = EmbeddingIndexes(pool)
        self._pgvector: PgVector | None = None
        self._indexes: tuple[float, list[EmbeddingIndex]] | None = None
        self._compute = asyncio.Lock()  # one batch through the models at a time
        self._model_error: str | None = None
        self._foreign: list[str] = []  # index models this worker lacks (warned once)

    async def pgvector(self) -> PgVector:
        if self._pgvector is None:
            self._pgvector = await detect_pgvector(self.pool)
            if not self._pgvector.available:
                log.warning("embeddings are off: %s", self._pgvector.reason)
        return self._pgvector

    async def _writable_indexes(self, default: ClipModel | None) -> list[EmbeddingIndex]:
        """The embedding indexes this process can write (their model is in its catalog);
        the first index of a library is created for the default model."""
        if default is None or not (await self.pgvector()).available:
            return []
        cached = self._indexes
        if cached is None or time.monotonic() - cached[0] > INDEX_CACHE_SECONDS:
            current = await self.indexes.current()
            if not current:
                first = await self.indexes.ensure_first(default.name, default.embed_dim)
                current = [first] if first else await self.indexes.current()
            cached = (time.monotonic(), current)
            self._indexes = cached
            foreign = sorted({i.model for i in current if not self.catalog.has(i.model)})
            if foreign and foreign != self._foreign:
                log.warning(
                    "the library's embedding index is of %s, which this worker does not have "
                    "(MEDIAJOBS_CLIP_MODEL_DIR): new items get no vector there until "
                    "`mediajobs models reindex`",
                    ", ".join(foreign),
                )
            self._foreign = foreign
        return [i for i in cached[1] if self.catalog.has(i.model)]

    async def _models(self) -> tuple[ClipModel | None, list[EmbeddingIndex], list[ClipModel]]:
        """The default model (None when off or broken), the indexes to write and the
        models they need (the default always, for its tags)."""
        if not self.catalog.enabled:
            return None, [], []
        try:
            default = await self.catalog.get()
            indexes = await self._writable_indexes(default)
            names = {default.name} | {i.model for i in indexes}
            models = [await self.catalog.get(n) for n in sorted(names)]
        except ModelInvalid as exc:
            if self._model_error != str(exc):
                log.error("image understanding runs without its model: %s", exc)
                self._model_error = str(exc)
            return None, [], []
        for index in indexes:
            model = next(m for m in models if m.name == index.model)
            if model.embed_dim != index.dimensions:
                raise JobFailed(
                    f"embedding index {index.id} holds {index.dimensions}-dimensional vectors "
                    f"of {index.model!r}, which now answers {model.embed_dim}: run "
                    "`mediajobs models reindex`",
                    code="model_dimension_changed",
                )
        return default, indexes, models

    def _tagger_model(self, default: ClipModel, indexes: Sequence[EmbeddingIndex]) -> str:
        """CLIP tags come from the model the library is moving to: the building index's,
        else the active one's, else the default."""
        for state in ("building", "active"):
            for index in indexes:
                if index.state.value == state:
                    return index.model
        return default.name

    async def __call__(self, ctx: JobContext[JobQueue], job: Job) -> JSON:
        ids = self._ids(job)
        records = [
            r
            for r in await self.media.many(ids)
            if r.status is MediaStatus.READY and r.kind == "image" and r.owner_id == job.owner_id
        ]
        default, indexes, models = await self._models()
        side = max((m.info.image_size for m in models), default=_NO_MODEL_SIDE)
        clock = [time.perf_counter()]
        items = await fetch_variants(self.stores, records, side)
        clock.append(time.perf_counter())
        await ctx.progress(0.4, "downloaded")
        ctx.raise_if_cancelled()
        tagger = self._tagger_model(default, indexes) if default else None
        async with self._compute:
            await asyncio.to_thread(understand, items, models, tagger, self.catalog, side)
        clock.append(time.perf_counter())
        await ctx.progress(0.9, "understood")
        ctx.raise_if_cancelled()
        understood = [i for i in items if i.error is None]
        try:
            await self._write(understood, indexes, clip=tagger is not None)
            clock.append(time.perf_counter())
        except psycopg.errors.UndefinedTable:  # a reindex swapped indexes meanwhile
            self._indexes = None
            raise Retry("the embedding indexes changed while this job ran", delay=1.0) from None
        for item in items:
            if item.error:
                log.warning("media.embed %s: %s", item.record.id, item.error)
        return {
            "items": len(understood),
            "skipped": len(ids) - len(understood),
            "model": default.name if default else None,
            "vectors": [i.table for i in indexes],
            "clipTags": tagger is not None,
            # where the job's time went: reading variants, the CPU part, the transaction
            "ms": {
                phase: round((end - start) * 1000, 1)
                for phase, start, end in zip(
                    ("download", "compute", "write"), clock, clock[1:], strict=False
                )
            },
        }

    def _ids(self, job: Job) -> list[uuid.UUID]:
        raw = job.payload.get("mediaIds")
        if not isinstance(raw, list) or not 0 < len(raw) <= MAX_ITEMS:
            raise JobFailed(
                f"the payload needs mediaIds: 1 to {MAX_ITEMS} ids", code="invalid_payload"
            )
        try:
            return [uuid.UUID(str(value)) for value in raw]
        except ValueError:
            raise JobFailed("mediaIds holds an invalid id", code="invalid_payload") from None

    async def _write(
        self, items: Sequence[Understood], indexes: Sequence[EmbeddingIndex], *, clip: bool
    ) -> None:
        if not items:
            return
        sources = (*MODEL_FREE, TagSource.CLIP) if clip else MODEL_FREE
        tags = {i.record.id: [*i.tags, *(i.clip_tags or [])] for i in items}
        async with self.media.transaction() as conn:
            await self.media.set_understood(conn, {i.record.id: i.phash for i in items})
            await self.tags.replace(conn, tags, sources)
            for index in indexes:
                embedded = [i for i in items if index.model in i.vectors]
                if embedded:
                    vectors = np.stack([i.vectors[index.model] for i in embedded])
                    ids = [i.record.id for i in embedded]
                    await self.indexes.upsert(conn, index, ids, vectors)
            await self.ingest.mark_ai_done(conn, [i.record.id for i in items])
