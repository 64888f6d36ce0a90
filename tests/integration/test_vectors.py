"""Embeddings in pgvector, on a real Postgres with the extension (the embedded one): the
extension found, a vector round trip, the HNSW index in the plan, an image's own vector
first, owner isolation and the review gate, a purge dropping an item's vectors, a model
switch to another dimension while search keeps answering, and the same database without
pgvector."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence

import numpy as np
import numpy.typing as npt
import pytest

from mediajobs.db import open_pool, vectors_sql
from mediajobs.db.media import MediaRepository
from mediajobs.db.pool import Pool
from mediajobs.db.tags import TagRepository
from mediajobs.db.vectors import (
    EmbeddingIndex,
    EmbeddingIndexes,
    IndexState,
    detect_pgvector,
    forget_embeddings,
    vector_text,
)
from mediajobs.vision.tags import Tag, TagSource

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def vpool(vector_database_url: str) -> AsyncIterator[Pool]:
    opened = await open_pool(vector_database_url, name="test", min_size=1, max_size=4)
    yield opened
    await opened.close()


def _unit(rng: np.random.Generator, rows: int, dims: int) -> npt.NDArray[np.float32]:
    vectors = rng.standard_normal((rows, dims)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


async def _items(pool: Pool, owner: str, count: int, status: str = "ready") -> list[uuid.UUID]:
    ids = [uuid.uuid4() for _ in range(count)]
    async with pool.connection() as conn:
        await conn.execute(
            """
            INSERT INTO media (id, owner_id, status, source_locator, deleted_at)
            SELECT id, %(owner)s, %(status)s::media_status, 'memory://b/' || id,
                   CASE WHEN %(status)s = 'deleted' THEN now() END
            FROM unnest(%(ids)s::uuid[]) AS id
            """,
            {"ids": ids, "owner": owner, "status": status},
        )
    return ids


async def _embed(
    pool: Pool, index: EmbeddingIndex, ids: Sequence[uuid.UUID], vectors: npt.NDArray[np.float32]
) -> None:
    async with pool.connection() as conn, conn.transaction():
        await EmbeddingIndexes(pool).upsert(conn, index, ids, vectors)


async def test_pgvector_is_found_and_a_vector_round_trips(vpool: Pool) -> None:
    found = await detect_pgvector(vpool)
    assert found.available and found.version and found.version.startswith("0.")
    indexes = EmbeddingIndexes(vpool)
    index = await indexes.ensure_first("tiny-clip", 32)
    assert index is not None and index.state is IndexState.ACTIVE and index.dimensions == 32
    assert await indexes.ensure_first("tiny-clip", 32) == index  # one first index
    assert await indexes.ensure_first("other", 16) is None  # another model waits for reindex
    ids = await _items(vpool, "alice", 3)
    vectors = _unit(np.random.default_rng(1), 3, 32)
    await _embed(vpool, index, ids, vectors)
    stored = await indexes.vector_of(index, ids[1])
    assert stored is not None
    np.testing.assert_array_equal(stored, vectors[1])  # float32 exactly
    async with vpool.connection() as conn:
        row = await (
            await conn.execute(f"SELECT model, vector_dims(embedding) AS d FROM {index.table}")
        ).fetchone()
    assert row == {"model": "tiny-clip", "d": 32}
    with pytest.raises(ValueError, match="16 dimensions for an index of 32"):
        await _embed(vpool, index, ids[:1], vectors[:1, :16])


async def test_an_items_own_vector_ranks_it_first_through_the_hnsw_index(vpool: Pool) -> None:
    indexes = EmbeddingIndexes(vpool)
    index = await indexes.ensure_first("tiny-clip", 64)
    assert index is not None
    rng = np.random.default_rng(2)
    ids = await _items(vpool, "alice", 2000)
    vectors = _unit(rng, 2000, 64)
    await _embed(vpool, index, ids, vectors)
    async with vpool.connection() as conn:
        await conn.execute(f"ANALYZE {index.table}")
        await conn.execute("ANALYZE media")
        plan = await (
            await conn.execute(
                index.statement("EXPLAIN " + vectors_sql.SEARCH),
                {
                    "query": vector_text(vectors[0]),
                    "owner": "alice",
                    "window": 200,
                    "limit": 10,
                    "offset": 0,
                    "exclude": [],
                },
            )
        ).fetchall()
    text = "\n".join(row["QUERY PLAN"] for row in plan)
    assert f"{index.table}_hnsw_idx" in text, text
    for probe in (0, 17, 1999):
        hits = await indexes.search(index, "alice", vectors[probe], limit=5)
        assert hits[0].media.id == ids[probe]
        assert hits[0].distance == pytest.approx(0.0, abs=1e-5)
        assert [h.distance for h in hits] == sorted(h.distance for h in hits)
    similar = await indexes.search(index, "alice", vectors[0], limit=5, exclude=[ids[0]])
    assert ids[0] not in [h.media.id for h in similar] and len(similar) == 5
    second_page = await indexes.search(index, "alice", vectors[0], limit=5, offset=5)
    first_ten = await indexes.search(index, "alice", vectors[0], limit=10)
    assert [h.media.id for h in second_page] == [h.media.id for h in first_ten[5:]]


async def test_search_sees_only_the_owners_ready_items(vpool: Pool) -> None:
    indexes = EmbeddingIndexes(vpool)
    index = await indexes.ensure_first("tiny-clip", 16)
    assert index is not None
    rng = np.random.default_rng(3)
    alice = await _items(vpool, "alice", 500)
    bob = await _items(vpool, "bob", 3)  # a small owner in a big index: exact search
    in_review = await _items(vpool, "bob", 1, status="in_review")
    deleted = await _items(vpool, "bob", 1, status="deleted")
    everyone = alice + bob + in_review + deleted
    vectors = _unit(rng, len(everyone), 16)
    await _embed(vpool, index, everyone, vectors)
    async with vpool.connection() as conn:
        await conn.execute(f"ANALYZE {index.table}")
    hits = await indexes.search(index, "bob", vectors[len(alice)], limit=10)
    assert {h.media.id for h in hits} == set(bob)  # all three, none of alice's
    assert hits[0].media.id == bob[0]
    for hidden in (in_review[0], deleted[0]):
        probe = vectors[everyone.index(hidden)]
        assert hidden not in {
            h.media.id for h in await indexes.search(index, "bob", probe, limit=10)
        }
    assert not set(alice) & {h.media.id for h in hits}
    alice_hits = await indexes.search(index, "alice", vectors[len(alice)], limit=50)
    assert len(alice_hits) == 50 and not {h.media.id for h in alice_hits} & set(bob)


async def test_a_model_of_another_dimension_is_built_beside_and_swapped_in(vpool: Pool) -> None:
    indexes = EmbeddingIndexes(vpool)
    old = await indexes.ensure_first("small", 16)
    assert old is not None
    rng = np.random.default_rng(4)
    ids = await _items(vpool, "alice", 40)
    old_vectors = _unit(rng, 40, 16)
    await _embed(vpool, old, ids, old_vectors)

    building = await indexes.start_building("large", 48)
    assert building.state is IndexState.BUILDING
    assert await indexes.start_building("large", 48) == building  # a reindex resumes it
    assert await indexes.ensure_first("large", 48) == building  # workers write to it too
    assert await indexes.count_missing(building) == 40
    first = await indexes.missing(building, limit=25)
    new_vectors = _unit(rng, 40, 48)
    by_id = dict(zip(ids, new_vectors, strict=True))
    await _embed(vpool, building, first, np.stack([by_id[i] for i in first]))
    # half done: search still answers from the old vectors
    assert (await indexes.active()) == old
    hits = await indexes.search(old, "alice", old_vectors[3], limit=1)
    assert hits[0].media.id == ids[3]
    rest = await indexes.missing(building, after=None, limit=100)
    assert set(rest) == set(ids) - set(first)
    await _embed(vpool, building, rest, np.stack([by_id[i] for i in rest]))
    assert await indexes.count_missing(building) == 0
    await indexes.build_hnsw(building)
    retired = await indexes.activate(building)
    assert retired is not None and retired.id == old.id and retired.state is IndexState.RETIRED
    active = await indexes.active()
    assert active is not None and active.id == building.id and active.dimensions == 48
    hits = await indexes.search(active, "alice", by_id[ids[7]], limit=1)
    assert hits[0].media.id == ids[7]
    async with vpool.connection() as conn:
        gone = await (await conn.execute("SELECT to_regclass(%s) AS t", (old.table,))).fetchone()
    assert gone == {"t": None}  # the old table is dropped


async def test_a_purge_drops_the_items_vectors_hash_and_tags(vpool: Pool) -> None:
    indexes = EmbeddingIndexes(vpool)
    active = await indexes.ensure_first("small", 8)
    assert active is not None
    building = await indexes.start_building("large", 12)
    rng = np.random.default_rng(6)
    gone, kept = await _items(vpool, "alice", 2, status="deleted")
    for index in (active, building):
        await _embed(vpool, index, [gone, kept], _unit(rng, 2, index.dimensions))
    media, tags = MediaRepository(vpool), TagRepository(vpool)
    async with vpool.connection() as conn, conn.transaction():
        await tags.replace(
            conn, {i: [Tag("beach", TagSource.CLIP, 0.9)] for i in (gone, kept)}, [TagSource.CLIP]
        )
        await conn.execute("UPDATE media SET phash = 7, caption = 'mine'")
    async with media.transaction() as conn:
        assert await media.mark_purged(gone, conn=conn)
        assert await forget_embeddings(conn, gone) == 2  # one row per table
    for index in (active, building):
        assert await indexes.vector_of(index, gone) is None
        assert await indexes.vector_of(index, kept) is not None
    assert await tags.of_item(gone) == [] and len(await tags.of_item(kept)) == 1
    purged = await media.get(gone, "alice")
    assert purged is not None and purged.phash is None and purged.tags == []
    assert purged.caption == "mine"  # the owner's text stays, as the filename does
    await _embed(vpool, active, [gone], _unit(rng, 1, 8))  # a job that ran across the purge
    assert await indexes.vector_of(active, gone) is None
    other = await media.get(kept, "alice")
    assert other is not None and other.phash == 7 and other.tags == ["beach"]


async def test_a_newer_reindex_replaces_an_unfinished_one(vpool: Pool) -> None:
    indexes = EmbeddingIndexes(vpool)
    await indexes.ensure_first("a", 8)
    abandoned = await indexes.start_building("b", 8)
    newer = await indexes.start_building("c", 12)
    assert newer.id != abandoned.id
    states = {i.model: i.state for i in await indexes.current()}
    assert states == {"a": IndexState.ACTIVE, "c": IndexState.BUILDING}


async def test_without_pgvector_the_reason_is_given(pool: Pool) -> None:
    found = await detect_pgvector(pool)  # the machine's server: no pgvector offered
    if found.available:  # DATABASE_URL points at a server that has it
        pytest.skip("this server has pgvector")
    assert found.version is None
    assert "no pgvector extension" in (found.reason or "")


async def test_pages_of_tied_items_show_each_once(vpool: Pool) -> None:
    indexes = EmbeddingIndexes(vpool)
    index = await indexes.ensure_first("tiny-clip", 16)
    assert index is not None
    rng = np.random.default_rng(5)
    copies = await _items(vpool, "alice", 6)  # six copies of one photo: one vector
    others = await _items(vpool, "alice", 40)
    vector = _unit(rng, 1, 16)
    await _embed(vpool, index, copies, np.repeat(vector, 6, axis=0))
    await _embed(vpool, index, others, _unit(rng, 40, 16))
    seen = []
    for offset in range(10):
        (hit,) = await indexes.search(index, "alice", vector[0], limit=1, offset=offset)
        seen.append(hit.media.id)
    assert len(set(seen)) == 10  # nobody twice
    assert set(seen[:6]) == set(copies) and seen[:6] == sorted(copies)  # ties by id
    whole = await indexes.search(index, "alice", vector[0], limit=10)
    assert [h.media.id for h in whole] == seen
