"""Tags, full-text search, the tag filter and near-duplicates against the machine's Postgres
(none of them needs pgvector): owner isolation and the review gate in each."""

from __future__ import annotations

import uuid

import pytest

from mediajobs.db.media import MediaRepository, MediaStatus
from mediajobs.db.pool import Pool
from mediajobs.db.search import SearchRepository
from mediajobs.db.tags import MAX_USER_TAGS, TagRepository, TooManyTags
from mediajobs.vision.tags import Tag, TagSource

pytestmark = pytest.mark.timeout(60)


async def _item(
    pool: Pool,
    owner: str,
    *,
    status: str = "ready",
    filename: str | None = None,
    alt: str | None = None,
    phash: int | None = None,
    sha256: str | None = None,
) -> uuid.UUID:
    media_id = uuid.uuid4()
    async with pool.connection() as conn:
        await conn.execute(
            """
            INSERT INTO media (id, owner_id, status, source_locator, original_filename,
                               alt_text, phash, sha256, deleted_at)
            VALUES (%s, %s, %s::media_status, %s, %s, %s, %s, %s,
                    CASE WHEN %s = 'deleted' THEN now() END)
            """,
            (
                media_id,
                owner,
                status,
                f"memory://b/{media_id}",
                filename,
                alt,
                phash,
                sha256,
                status,
            ),
        )
    return media_id


async def test_tags_replace_per_source_and_are_copied_to_the_row(pool: Pool) -> None:
    tags, media = TagRepository(pool), MediaRepository(pool)
    item = await _item(pool, "alice")
    async with pool.connection() as conn, conn.transaction():
        await tags.replace(
            conn,
            {
                item: [
                    Tag("dog", TagSource.CLIP, 0.6),
                    Tag("dog", TagSource.CLIP, 0.7),  # listed twice: the higher confidence
                    Tag("beach", TagSource.CLIP, 0.2),
                    Tag("green", TagSource.COLOUR, 0.5),
                ]
            },
            {TagSource.CLIP, TagSource.COLOUR},
        )
        await tags.edit_user_tags(conn, item, add=["holiday", "dog"])
    found = await tags.of_item(item)
    assert {(t.tag, t.source) for t in found} == {
        ("dog", TagSource.CLIP),
        ("beach", TagSource.CLIP),
        ("green", TagSource.COLOUR),
        ("holiday", TagSource.USER),
        ("dog", TagSource.USER),
    }
    assert next(t.confidence for t in found if t.tag == "dog" and t.source is TagSource.CLIP) == (
        pytest.approx(0.7)
    )
    record = await media.get(item)
    assert record is not None and record.tags == ["beach", "dog", "green", "holiday"]
    # a new CLIP result replaces CLIP's tags only
    async with pool.connection() as conn, conn.transaction():
        await tags.replace(conn, {item: [Tag("cat", TagSource.CLIP, 0.9)]}, {TagSource.CLIP})
        await tags.edit_user_tags(conn, item, remove=["dog", "never-had"])
    record = await media.get(item)
    assert record is not None and record.tags == ["cat", "green", "holiday"]


async def test_user_tags_are_bounded(pool: Pool) -> None:
    tags = TagRepository(pool)
    item = await _item(pool, "alice")
    with pytest.raises(TooManyTags):
        async with pool.connection() as conn, conn.transaction():
            await tags.edit_user_tags(conn, item, add=[f"t{i}" for i in range(MAX_USER_TAGS + 1)])
    assert await tags.of_item(item) == []  # rolled back


async def test_text_search_finds_stems_in_tags_alt_text_and_names_of_the_owner(pool: Pool) -> None:
    tags, search = TagRepository(pool), SearchRepository(pool)
    by_tag = await _item(pool, "alice", filename="IMG_0001.jpg")
    by_alt = await _item(pool, "alice", alt="Two dogs running on the sand")
    by_name = await _item(pool, "alice", filename="dog-park.png")
    unrelated = await _item(pool, "alice", alt="a red car")
    bobs = await _item(pool, "bob", alt="my dog")
    hidden = await _item(pool, "alice", status="in_review", alt="dog")
    deleted = await _item(pool, "alice", status="deleted", alt="dog")
    async with pool.connection() as conn, conn.transaction():
        await tags.replace(conn, {by_tag: [Tag("dog", TagSource.CLIP, 0.9)]}, {TagSource.CLIP})
    hits = await search.text("alice", "dogs", limit=10)
    assert {h.media.id for h in hits} == {by_tag, by_alt, by_name}
    assert not {h.media.id for h in hits} & {unrelated, bobs, hidden, deleted}
    assert [h.rank for h in hits] == sorted((h.rank for h in hits), reverse=True)
    assert [h.media.id for h in await search.text("alice", "dog -sand", limit=10)] != []
    assert by_alt not in {h.media.id for h in await search.text("alice", "dog -sand", limit=10)}
    assert await search.text("alice", '"unbalanced', limit=10) == []  # never a syntax error
    assert len(await search.text("alice", "dog", limit=2)) == 2
    assert len(await search.text("alice", "dog", limit=2, offset=2)) == 1


async def test_the_tag_filter_lists_the_owners_items_with_that_tag(pool: Pool) -> None:
    tags, media = TagRepository(pool), MediaRepository(pool)
    tagged = await _item(pool, "alice")
    untagged = await _item(pool, "alice")
    bobs = await _item(pool, "bob")
    async with pool.connection() as conn, conn.transaction():
        await tags.replace(
            conn,
            {
                tagged: [Tag("beach", TagSource.CLIP, 0.5)],
                bobs: [Tag("beach", TagSource.CLIP, 0.5)],
            },
            {TagSource.CLIP},
        )
    page = await media.page("alice", tag="beach")
    assert [r.id for r in page] == [tagged]
    assert {r.id for r in await media.page("alice")} == {tagged, untagged}
    assert await media.page("alice", tag="nothing") == []
    assert await media.page("alice", tag="beach", statuses=(MediaStatus.DELETED,)) == []


async def test_near_duplicates_by_hash_distance_and_by_bytes(pool: Pool) -> None:
    search = SearchRepository(pool)
    base = 0x0F0F_0F0F_0F0F_0F0F
    original = await _item(pool, "alice", phash=base, sha256="a" * 64)
    resized = await _item(pool, "alice", phash=base ^ 0b101, sha256="b" * 64)  # 2 bits
    recoded = await _item(pool, "alice", phash=base ^ 0b1111, sha256="c" * 64)  # 4 bits
    same_bytes = await _item(pool, "alice", phash=None, sha256="a" * 64)
    unrelated = await _item(pool, "alice", phash=~base, sha256="d" * 64)  # 64 bits
    bobs_copy = await _item(pool, "bob", phash=base, sha256="a" * 64)
    deleted_copy = await _item(pool, "alice", status="deleted", phash=base)
    found = await search.duplicates("alice", original)
    assert [(d.media.id, d.bits, d.identical) for d in found] == [
        (same_bytes, 0, True),
        (resized, 2, False),
        (recoded, 4, False),
    ]
    assert not {d.media.id for d in found} & {unrelated, bobs_copy, deleted_copy}
    assert [d.media.id for d in await search.duplicates("alice", original, max_bits=3)] == [
        same_bytes,
        resized,
    ]
    assert await search.duplicates("bob", original) == []  # another owner's item


async def test_text_search_reads_the_gin_index(pool: Pool) -> None:
    from mediajobs.db import search_sql

    async with pool.connection() as conn:
        await conn.execute(
            """
            INSERT INTO media (id, owner_id, status, source_locator, alt_text)
            SELECT gen_random_uuid(), 'alice', 'ready', 'memory://b/' || g, 'photo ' || g
            FROM generate_series(1, 5000) AS g
            """
        )
        await conn.execute("ANALYZE media")
        plan = await (
            await conn.execute(
                "EXPLAIN " + search_sql.TEXT_SEARCH,
                {"owner": "alice", "q": "kangaroo", "limit": 10, "offset": 0},
            )
        ).fetchall()
    text = "\n".join(row["QUERY PLAN"] for row in plan)
    assert "media_search_idx" in text, text
