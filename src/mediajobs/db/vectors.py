"""Embeddings in pgvector: whether the database has the extension, the registry of
embedding indexes, their tables, writes, and nearest-neighbour search.

An embedding index is a row of ``embedding_indexes`` and a table ``media_embeddings_<id>``
(``media_id``, ``owner_id``, ``model``, ``embedding vector(d)``) with an HNSW index over
cosine distance. At most one index is ``active`` (search reads it) and at most one is
``building`` (a model switch: ``mediajobs models reindex`` fills it while search keeps
answering from the active one, then ``activate`` swaps them in one transaction and drops the
old table). A vector column has one dimension, so a model of another dimension never meets
the old vectors: the dimension mismatches that peers hit after a model switch cannot happen.

Without pgvector (``detect_pgvector`` says why), nothing here is used and the rest of
mediajobs works; search answers with full-text instead.
"""

from __future__ import annotations

import struct
import uuid
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg import sql as pgsql
from psycopg.adapt import Dumper
from psycopg.pq import Format
from psycopg.rows import DictRow

from mediajobs.db import vectors_sql as sql
from mediajobs.db.media import MediaRecord
from mediajobs.db.pool import Pool

Conn = psycopg.AsyncConnection[DictRow]

# HNSW candidates per search (pgvector's hnsw.ef_search; its default is 40): at least this,
# and at least the rows a page asks for, up to MAX_EF_SEARCH (pgvector's own limit is 1000).
# 200 gave recall@10 0.96 over 200k 512-dimensional vectors (bench/search.py; 100 gave 0.91,
# 300 gave 0.98 at 1.3x the latency).
MIN_EF_SEARCH = 200
MAX_EF_SEARCH = 1000


class IndexState(StrEnum):
    BUILDING = "building"  # being filled by a reindex; search does not read it yet
    ACTIVE = "active"  # search reads it; new items are written to it
    RETIRED = "retired"  # replaced; its table is dropped


@dataclass(frozen=True)
class PgVector:
    """Whether embeddings can be stored: ``version`` of the installed extension, else
    None with ``reason`` saying why not (for ``readyz`` and the search response)."""

    version: str | None
    reason: str | None = None

    @property
    def available(self) -> bool:
        return self.version is not None


@dataclass(frozen=True)
class EmbeddingIndex:
    id: int
    model: str
    dimensions: int
    state: IndexState
    created_at: datetime
    activated_at: datetime | None
    retired_at: datetime | None

    @classmethod
    def from_row(cls, row: Any) -> EmbeddingIndex:
        values = dict(row)
        values["state"] = IndexState(values["state"])
        return cls(**values)

    @property
    def table(self) -> str:
        return f"media_embeddings_{self.id}"

    def _names(self) -> dict[str, pgsql.Composable]:
        return {
            "table": pgsql.Identifier(self.table),
            "owner_idx": pgsql.Identifier(f"{self.table}_owner_idx"),
            "hnsw_idx": pgsql.Identifier(f"{self.table}_hnsw_idx"),
            "dimensions": pgsql.Literal(self.dimensions),
        }

    def statement(self, template: str) -> pgsql.Composed:
        """``template`` (db/vectors_sql.py) completed with this index's names."""
        return pgsql.SQL(template).format(**self._names())


@dataclass(frozen=True)
class Neighbour:
    """A search hit: the item and its cosine distance to the query (0: same direction, 2:
    opposite)."""

    media: MediaRecord
    distance: float


class VectorParam:
    """A query vector sent as a statement parameter in pgvector's binary form (int16
    dimensions, int16 unused, then big-endian float4s): no text to format on our side or to
    parse on the server's (0.1 ms each way for 512 dimensions). The statement casts it
    (``%(query)s::vector``): it goes out untyped (oid 0), and the cast's type reads it."""

    __slots__ = ("vector",)

    def __init__(self, vector: npt.NDArray[np.float32]) -> None:
        self.vector = vector


class _VectorDumper(Dumper):
    format = Format.BINARY
    oid = 0  # untyped: the statement's ::vector cast decides (pgvector's oid varies)

    def dump(self, obj: VectorParam) -> bytes:
        vector = obj.vector
        return struct.pack("!hh", len(vector), 0) + vector.astype(">f4").tobytes()


psycopg.adapters.register_dumper(VectorParam, _VectorDumper)


def vector_text(vector: npt.NDArray[np.float32]) -> str:
    """pgvector's text form of a 1-D vector: ``[0.1,0.2,...]`` (9 significant digits: a
    float32 round-trips exactly)."""
    return "[" + ",".join(f"{x:.9g}" for x in vector.tolist()) + "]"


def parse_vector(text: str) -> npt.NDArray[np.float32]:
    """A vector read in pgvector's text form."""
    return np.asarray([float(x) for x in text.strip("[]").split(",")], dtype=np.float32)


async def forget_embeddings(conn: Conn, media_id: uuid.UUID) -> int:
    """Inside the caller's transaction: delete ``media_id``'s vectors from every embedding
    table (a purged item leaves no trace in search). Returns how many rows went; without
    pgvector there are no tables and it is 0."""
    rows = await (await conn.execute(sql.WITH_TABLES)).fetchall()
    deleted = 0
    for index in (EmbeddingIndex.from_row(row) for row in rows):
        cursor = await conn.execute(index.statement(sql.FORGET), (media_id,))
        deleted += max(cursor.rowcount, 0)
    return deleted


async def detect_pgvector(pool: Pool, *, install: bool = True) -> PgVector:
    """The pgvector extension of the database behind ``pool``: installed, or installed now
    (``CREATE EXTENSION``, when ``install`` and the server offers it), or the reason it is
    not there. Never raises for a missing extension or a refused ``CREATE``."""
    async with pool.connection() as conn:
        row = await (await conn.execute(sql.INSTALLED)).fetchone()
        if row is not None:
            return PgVector(str(row["extversion"]))
        offered = await (await conn.execute(sql.AVAILABLE)).fetchone()
        if offered is None:
            return PgVector(
                None,
                "this PostgreSQL has no pgvector extension (install pgvector on the server "
                "for embeddings and semantic search)",
            )
        if not install:
            return PgVector(None, "pgvector is offered but not installed in this database")
        try:
            await conn.execute(sql.CREATE_EXTENSION)
        except psycopg.errors.InsufficientPrivilege:
            return PgVector(
                None,
                "pgvector is offered but this role may not CREATE EXTENSION vector (run it "
                "once as a superuser)",
            )
        row = await (await conn.execute(sql.INSTALLED)).fetchone()
        return PgVector(str(row["extversion"]) if row else None)


class EmbeddingIndexes:
    """The registry of embedding indexes and the tables behind them."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool
        # Connections whose session already has hnsw.ef_search = MIN_EF_SEARCH: a search
        # that needs no more is then one statement (no transaction, no SET LOCAL).
        self._tuned: weakref.WeakSet[Conn] = weakref.WeakSet()

    async def current(self) -> list[EmbeddingIndex]:
        """The active and the building index (either may be missing), by id."""
        async with self._pool.connection() as conn:
            rows = await (await conn.execute(sql.CURRENT)).fetchall()
        return [EmbeddingIndex.from_row(row) for row in rows]

    async def active(self) -> EmbeddingIndex | None:
        return next((i for i in await self.current() if i.state is IndexState.ACTIVE), None)

    async def ensure_first(self, model: str, dimensions: int) -> EmbeddingIndex | None:
        """The first index of a library: when there is neither an active nor a building
        index, create one for ``model`` (active at once, with its HNSW index, so items
        are searchable as they are embedded). Returns the index that takes ``model``'s
        vectors (the active or building one of that model and dimension), else None."""
        for index in await self.current():
            if index.model == model and index.dimensions == dimensions:
                return index
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute(sql.LOCK_REGISTRY, (sql.REGISTRY_LOCK_KEY,))
            rows = await (await conn.execute(sql.CURRENT)).fetchall()
            indexes = [EmbeddingIndex.from_row(row) for row in rows]
            if indexes:  # another process won, or another model is in use
                return next(
                    (i for i in indexes if i.model == model and i.dimensions == dimensions),
                    None,
                )
            index = await self._create(conn, model, dimensions, IndexState.ACTIVE)
            await conn.execute(index.statement(sql.CREATE_HNSW))
            return index

    async def start_building(self, model: str, dimensions: int) -> EmbeddingIndex:
        """The building index of ``model`` (a reindex resumes it), created when there is
        none. A building index of another model is retired and dropped first (the newest
        reindex wins)."""
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute(sql.LOCK_REGISTRY, (sql.REGISTRY_LOCK_KEY,))
            rows = await (await conn.execute(sql.CURRENT)).fetchall()
            for index in (EmbeddingIndex.from_row(row) for row in rows):
                if index.state is not IndexState.BUILDING:
                    continue
                if index.model == model and index.dimensions == dimensions:
                    return index
                await conn.execute(sql.RETIRE, (index.id,))
                await conn.execute(index.statement(sql.DROP_TABLE))
            return await self._create(conn, model, dimensions, IndexState.BUILDING)

    async def _create(
        self, conn: Conn, model: str, dimensions: int, state: IndexState
    ) -> EmbeddingIndex:
        params = {"model": model, "dimensions": dimensions, "state": state.value}
        row = await (await conn.execute(sql.INSERT, params)).fetchone()
        index = EmbeddingIndex.from_row(row)
        await conn.execute(index.statement(sql.CREATE_TABLE))
        await conn.execute(index.statement(sql.CREATE_OWNER_INDEX))
        return index

    async def build_hnsw(self, index: EmbeddingIndex) -> None:
        """Create the HNSW index of ``index``'s table (idempotent). A reindex builds it
        once its table is full: one build is faster than inserting into the graph row by
        row."""
        async with self._pool.connection() as conn:
            await conn.execute(index.statement(sql.CREATE_HNSW))

    async def activate(self, building: EmbeddingIndex) -> EmbeddingIndex | None:
        """Make ``building`` the active index and retire the old one, in one transaction
        (search switches at its commit); then drop the retired table. Returns the retired
        index, or None when there was none. The caller builds the HNSW index first."""
        retired: EmbeddingIndex | None = None
        async with self._pool.connection() as conn:
            async with conn.transaction():
                await conn.execute(sql.LOCK_REGISTRY, (sql.REGISTRY_LOCK_KEY,))
                rows = await (await conn.execute(sql.CURRENT)).fetchall()
                for index in (EmbeddingIndex.from_row(row) for row in rows):
                    if index.state is IndexState.ACTIVE:
                        row = await (await conn.execute(sql.RETIRE, (index.id,))).fetchone()
                        retired = EmbeddingIndex.from_row(row)
                done = await (await conn.execute(sql.ACTIVATE, (building.id,))).fetchone()
                if done is None:
                    raise LookupError(f"embedding index {building.id} is not building")
            if retired is not None:
                await conn.execute(retired.statement(sql.DROP_TABLE))
        return retired

    async def upsert(
        self,
        conn: Conn,
        index: EmbeddingIndex,
        ids: Sequence[uuid.UUID],
        vectors: npt.NDArray[np.float32],
    ) -> None:
        """Write ``vectors`` ([len(ids), dimensions], unit length) of ``index``'s model for
        the items ``ids`` (an item that is gone is skipped), in the caller's transaction."""
        if len(ids) != len(vectors):
            raise ValueError("one vector per id")
        if len(vectors) and vectors.shape[1] != index.dimensions:
            raise ValueError(
                f"vectors of {vectors.shape[1]} dimensions for an index of {index.dimensions}"
            )
        params = {
            "model": index.model,
            "ids": list(ids),
            "vectors": [vector_text(v) for v in vectors],
        }
        await conn.execute(index.statement(sql.UPSERT), params)

    async def missing(
        self, index: EmbeddingIndex, *, after: uuid.UUID | None = None, limit: int = 256
    ) -> list[uuid.UUID]:
        """Ready images that ``index`` has no vector for, by id after ``after``."""
        params = {"after": after or uuid.UUID(int=0), "limit": limit}
        async with self._pool.connection() as conn:
            rows = await (await conn.execute(index.statement(sql.MISSING), params)).fetchall()
        return [row["id"] for row in rows]

    async def count_missing(self, index: EmbeddingIndex) -> int:
        async with self._pool.connection() as conn:
            row = await (await conn.execute(index.statement(sql.COUNT_MISSING))).fetchone()
        return int(row["n"]) if row else 0

    async def count(self, index: EmbeddingIndex) -> int:
        async with self._pool.connection() as conn:
            row = await (await conn.execute(index.statement(sql.COUNT_ROWS))).fetchone()
        return int(row["n"]) if row else 0

    async def vector_of(
        self, index: EmbeddingIndex, media_id: uuid.UUID
    ) -> npt.NDArray[np.float32] | None:
        """The stored vector of one item, or None."""
        async with self._pool.connection() as conn:
            cursor = await conn.execute(index.statement(sql.VECTOR_OF), (media_id,))
            row = await cursor.fetchone()
        return None if row is None else parse_vector(row["embedding"])

    async def search(
        self,
        index: EmbeddingIndex,
        owner_id: str,
        query: npt.NDArray[np.float32],
        *,
        limit: int,
        offset: int = 0,
        exclude: Sequence[uuid.UUID] = (),
    ) -> list[Neighbour]:
        """The owner's ready items nearest to ``query`` (a unit vector), ``offset`` to
        ``offset + limit`` by cosine distance, then id (ties keep one order across pages).

        HNSW first (``hnsw.ef_search`` = max(200, offset + limit), at most 1000; the page is
        cut from that many candidates, so a page past them is empty). HNSW filters the
        graph's candidates by owner after the walk, and the page drops items that are not
        ready, so a page can come back short when the owner holds few of the index's
        vectors; then the owner's rows are searched exactly (index scans off: a bitmap scan
        of the owner index and a sort), which is both complete and fast for such an owner.
        """
        wanted = offset + limit
        ef_search = min(MAX_EF_SEARCH, max(MIN_EF_SEARCH, wanted))
        params = {
            "query": VectorParam(query),
            "owner": owner_id,
            "window": ef_search,
            "limit": limit,
            "offset": offset,
            "exclude": list(exclude),
        }
        statement = index.statement(sql.SEARCH)
        async with self._pool.connection() as conn:
            if ef_search == MIN_EF_SEARCH:
                if conn not in self._tuned:
                    await conn.execute(sql.SET_SESSION_EF_SEARCH, (str(MIN_EF_SEARCH),))
                    self._tuned.add(conn)
                rows = await (await conn.execute(statement, params)).fetchall()
            else:
                async with conn.transaction():
                    await conn.execute(sql.SET_EF_SEARCH, (str(ef_search),))
                    rows = await (await conn.execute(statement, params)).fetchall()
            if len(rows) < limit:
                async with conn.transaction():
                    await conn.execute(sql.SET_EXACT)
                    exact = index.statement(sql.SEARCH_EXACT)
                    rows = await (await conn.execute(exact, params)).fetchall()
        return [_neighbour(row) for row in rows]


def _neighbour(row: Any) -> Neighbour:
    values = dict(row)
    distance = float(values.pop("distance"))
    return Neighbour(MediaRecord.from_row(values), distance)
