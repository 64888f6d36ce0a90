"""Image understanding through the API and a worker, in one process: uploads become
``media.embed`` jobs that hash, tag and (with a model and pgvector) embed them; search,
similar, duplicates, the tag filter and user tags; owner isolation and the review gate in
every route; the no-model and no-pgvector paths."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from PIL import Image

from tests.support.images import camera_exif, encode, jpeg, photo, quadrants
from tests.support.inprocess import in_process_site
from tests.support.sse import bearer
from tests.support.uploads import upload

pytestmark = pytest.mark.timeout(240)

ALICE, BOB = bearer("alice"), bearer("bob")


async def understood(
    client: httpx.AsyncClient, media_id: str, auth: dict[str, str], *, clip: bool = False
) -> dict[str, Any]:
    """The item once media.embed has tagged it (with ``clip``: CLIP tags too)."""
    async with asyncio.timeout(60):
        while True:
            item: dict[str, Any] = (await client.get(f"/media/{media_id}", headers=auth)).json()
            sources = {t["source"] for t in item.get("tagDetails") or []}
            if item["tags"] and (not clip or "clip" in sources):
                return item
            await asyncio.sleep(0.05)


def _variants_of(original: Image.Image) -> dict[str, bytes]:
    """A photo, its 50% resize, a q=60 re-encode of it, and an unrelated picture."""
    half = original.resize((original.width // 2, original.height // 2))
    return {
        "original": jpeg(original, exif=camera_exif(gps=False)),
        "half": jpeg(half),
        "q60": encode(original, "JPEG", quality=60),
        "unrelated": jpeg(quadrants(900, 700)),
    }


@pytest.fixture
async def plain(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """The machine's Postgres (no pgvector) and no model."""
    async with in_process_site(database_url) as client:
        yield client


async def test_without_a_model_items_are_hashed_and_tagged_and_search_is_full_text(
    plain: httpx.AsyncClient,
) -> None:
    client = plain
    made = {}
    for name, data in _variants_of(photo(1200, 900)).items():
        made[name] = (await upload(client, ALICE, data, filename=f"{name}.jpg"))["id"]
    original = await understood(client, made["original"], ALICE)
    assert {"landscape", "canon", "eos r5", "2024"} <= set(original["tags"])
    sources = {(t["tag"], t["source"]) for t in original["tagDetails"]}
    assert ("canon", "exif") in sources
    assert any(source == "colour" for _, source in sources)
    for name in made:
        await understood(client, made[name], ALICE)

    # Perceptual duplicates: the resize and the re-encode, not the unrelated picture.
    dups = await client.get(f"/media/{made['original']}/duplicates", headers=ALICE)
    assert dups.status_code == 200, dups.text
    found = {item["id"]: item for item in dups.json()["items"]}
    assert set(found) == {made["half"], made["q60"]}
    assert all(0 <= item["bits"] <= 8 and item["identical"] is False for item in found.values())
    # Another owner's item is not found, and the routes do not see across owners.
    assert (
        await client.get(f"/media/{made['original']}/duplicates", headers=BOB)
    ).status_code == 404
    assert (await client.get(f"/media/{made['original']}/similar", headers=BOB)).status_code == 404

    # The tag filter and full-text search.
    tagged = await client.get("/media", params={"tag": "Canon"}, headers=ALICE)
    assert [item["id"] for item in tagged.json()["items"]] == [made["original"]]
    assert (await client.get("/media", params={"tag": "canon"}, headers=BOB)).json()["items"] == []
    assert (await client.get("/media", params={"tag": "the"}, headers=ALICE)).json()["error"][
        "code"
    ] == "invalid_tag"
    search = await client.get("/media/search", params={"q": "canon"}, headers=ALICE)
    assert search.status_code == 200, search.text
    body = search.json()
    assert body["mode"] == "text" and "no CLIP model" in body["reason"]
    assert [item["id"] for item in body["items"]] == [made["original"]]
    assert body["items"][0]["score"] > 0
    by_name = await client.get("/media/search", params={"q": "unrelated"}, headers=ALICE)
    assert [item["id"] for item in by_name.json()["items"]] == [made["unrelated"]]
    assert (await client.get("/media/search", params={"q": "canon"}, headers=BOB)).json()[
        "items"
    ] == []
    refused = await client.get(
        "/media/search", params={"q": "canon", "mode": "semantic"}, headers=ALICE
    )
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "semantic_search_off"
    similar = await client.get(f"/media/{made['original']}/similar", headers=ALICE)
    assert similar.status_code == 409
    assert similar.json()["error"]["code"] == "semantic_search_off"
    ready = (await client.get("/readyz")).json()
    assert ready["understanding"]["semantic"] is False
    assert ready["understanding"]["model"] is None

    # The owner's own tags: added, found, removed; normalised; bad ones refused.
    patched = await client.patch(
        f"/media/{made['unrelated']}",
        json={"tags": {"add": ["  The Holiday ", "beach"]}, "caption": "Grandma's garden"},
        headers=ALICE,
    )
    assert patched.status_code == 200, patched.text
    assert {"holiday", "beach"} <= set(patched.json()["tags"])
    assert ("holiday", "user") in {(t["tag"], t["source"]) for t in patched.json()["tagDetails"]}
    hits = await client.get("/media/search", params={"q": "holidays"}, headers=ALICE)
    assert [item["id"] for item in hits.json()["items"]] == [made["unrelated"]]
    garden = await client.get("/media/search", params={"q": "garden"}, headers=ALICE)
    assert [item["id"] for item in garden.json()["items"]] == [made["unrelated"]]
    removed = await client.patch(
        f"/media/{made['unrelated']}", json={"tags": {"remove": ["holiday"]}}, headers=ALICE
    )
    assert "holiday" not in removed.json()["tags"] and "beach" in removed.json()["tags"]
    bad = await client.patch(
        f"/media/{made['unrelated']}", json={"tags": {"add": ["of the"]}}, headers=ALICE
    )
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_tag"
    too_many = await client.patch(
        f"/media/{made['unrelated']}",
        json={"tags": {"add": [f"t{i}" for i in range(101)]}},
        headers=ALICE,
    )
    assert too_many.status_code == 422  # the body's own limit: 100 per request
    others = await client.patch(
        f"/media/{made['unrelated']}", json={"tags": {"add": ["mine"]}}, headers=BOB
    )
    assert others.status_code == 404


@pytest.fixture
async def semantic(
    vector_database_url: str, tiny_clip_dir: Path
) -> AsyncIterator[httpx.AsyncClient]:
    """Postgres with pgvector and the tiny model; every CLIP tag above 0 kept."""
    async with in_process_site(
        vector_database_url,
        MEDIAJOBS_CLIP_MODEL_DIR=str(tiny_clip_dir),
        MEDIAJOBS_CLIP_TAG_THRESHOLD="0",
        MEDIAJOBS_CLIP_TAG_TOP_K="3",
    ) as client:
        yield client


async def test_with_a_model_and_pgvector_search_is_semantic_and_owner_scoped(
    semantic: httpx.AsyncClient, vector_database_url: str
) -> None:
    client = semantic
    made = {}
    for name, data in _variants_of(photo(1200, 900)).items():
        made[name] = (await upload(client, ALICE, data, filename=f"{name}.jpg"))["id"]
    bobs = (await upload(client, BOB, jpeg(photo(1200, 900)), filename="bob.jpg"))["id"]
    for media_id in made.values():
        item = await understood(client, media_id, ALICE, clip=True)
        clip_tags = [t for t in item["tagDetails"] if t["source"] == "clip"]
        assert len(clip_tags) == 3 and all(0 < t["confidence"] <= 1 for t in clip_tags)
    await understood(client, bobs, BOB, clip=True)

    ready = (await client.get("/readyz")).json()["understanding"]
    assert ready["semantic"] is True and ready["model"] == "tiny-clip"
    assert ready["pgvector"] and ready["index"]["dimensions"] == 32

    search = await client.get("/media/search", params={"q": "a dog", "limit": 10}, headers=ALICE)
    assert search.status_code == 200, search.text
    body = search.json()
    assert body["mode"] == "semantic" and body["model"] == "tiny-clip"
    assert {item["id"] for item in body["items"]} == set(made.values())  # never bob's
    scores = [item["score"] for item in body["items"]]
    assert scores == sorted(scores, reverse=True)
    paged = await client.get("/media/search", params={"q": "a dog", "limit": 2}, headers=ALICE)
    following = await client.get(
        "/media/search",
        params={"q": "a dog", "limit": 2, "cursor": paged.json()["nextCursor"]},
        headers=ALICE,
    )
    ids = [i["id"] for i in paged.json()["items"]] + [i["id"] for i in following.json()["items"]]
    assert ids == [item["id"] for item in body["items"]]
    text_only = await client.get(
        "/media/search", params={"q": "canon", "mode": "text"}, headers=ALICE
    )
    assert (
        text_only.json()["mode"] == "text"
        and text_only.json()["items"][0]["id"] == made["original"]
    )

    # An image's own embedding ranks itself first: its resize is its nearest neighbour.
    similar = await client.get(f"/media/{made['original']}/similar", headers=ALICE)
    assert similar.status_code == 200, similar.text
    nearest = similar.json()["items"]
    assert made["original"] not in {i["id"] for i in nearest}
    assert nearest[0]["id"] in (made["half"], made["q60"])
    assert nearest[0]["score"] > 0.99
    assert bobs not in {i["id"] for i in nearest}

    # The review gate: an item that is not ready leaves every search route.
    async with await psycopg.AsyncConnection.connect(vector_database_url, autocommit=True) as conn:
        await conn.execute(
            "UPDATE media SET status = 'in_review' WHERE id = %s", (uuid.UUID(made["half"]),)
        )
    routes = [
        ("/media/search", {"q": "a dog"}),
        (f"/media/{made['original']}/similar", {}),
        (f"/media/{made['original']}/duplicates", {}),
    ]
    for path, params in routes:
        answer = await client.get(path, params=params, headers=ALICE)
        assert answer.status_code == 200, answer.text
        assert made["half"] not in {i["id"] for i in answer.json()["items"]}, path


async def test_bad_search_input_is_a_clear_4xx(plain: httpx.AsyncClient) -> None:
    client = plain
    cases = [
        ({"q": ""}, "invalid_query"),
        ({"q": "   "}, "invalid_query"),
        ({"q": "x" * 501}, "invalid_query"),
        ({"q": "dog", "mode": "fuzzy"}, "invalid_query"),
        ({"q": "dog", "cursor": "bm90LWEtY3Vyc29y"}, "invalid_cursor"),
        ({"q": "dog", "cursor": "bzo5OTk5OTk5"}, "invalid_cursor"),  # o:9999999, too deep
        ({"q": "dog", "limit": "0"}, "invalid_query"),
        ({"q": "dog", "limit": "101"}, "invalid_query"),
        ({"q": "dog\u202e"}, "invalid_query"),
    ]
    for params, code in cases:
        answer = await client.get("/media/search", params=params, headers=ALICE)
        assert answer.status_code == 400, (params, answer.text)
        assert answer.json()["error"]["code"] == code, (params, answer.text)
    assert (await client.get("/media/search", params={"q": "dog"})).status_code == 401
    missing = await client.get(f"/media/{uuid.uuid4()}/duplicates", headers=ALICE)
    assert missing.status_code == 404
    not_an_id = await client.get("/media/not-an-id/similar", headers=ALICE)
    assert not_an_id.status_code == 404


async def test_ingested_files_move_from_indexed_to_ai_done_with_hashes_and_vectors(
    vector_database_url: str, redis_url: str, tiny_clip_dir: Path, tmp_path: Path
) -> None:
    from mediajobs.config import Settings
    from mediajobs.db.ingest import IngestRepository
    from tests.support.ingest import checkpoint, ingest_all
    from tests.support.media import media_env, memory_store
    from tests.support.waiting import wait_for

    root = tmp_path / "photos"
    root.mkdir()
    for index in range(5):
        (root / f"p{index}.jpg").write_bytes(jpeg(photo(700 + 10 * index, 500)))
    (root / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    settings = Settings(ingest_settle_seconds=0.0, clip_model_dirs=(tiny_clip_dir,))
    with memory_store() as memory:
        async with media_env(vector_database_url, redis_url, memory, settings=settings) as env:
            status = await ingest_all(env, root, batch_size=4)
            assert status.done == status.total == 6

            async def understood() -> bool:
                rows = await checkpoint(env)
                return sum(row["status"] == "ai_done" for row in rows.values()) == 5

            await wait_for(understood, timeout=60)
            rows = await checkpoint(env)
            assert rows["broken.jpg"]["status"] == "failed"  # a failure stays failed
            final = await IngestRepository(env.pool).status(status.run.id)
            assert final is not None and final.done == 6 and final.counts["ai_done"] == 5
            async with env.pool.connection() as conn:
                media = await (
                    await conn.execute(
                        "SELECT id, phash, understood_at, tags_text FROM media ORDER BY id"
                    )
                ).fetchall()
                (table,) = await (
                    await conn.execute(
                        "SELECT 'media_embeddings_' || id AS t FROM embedding_indexes"
                    )
                ).fetchall()
                vectors = await (
                    await conn.execute(f"SELECT count(*) AS n FROM {table['t']}")
                ).fetchone()
    assert len(media) == 5 and all(m["phash"] is not None and m["understood_at"] for m in media)
    assert all("landscape" in m["tags_text"].split("\n") for m in media)
    assert vectors == {"n": 5}


async def test_a_switch_to_a_model_of_another_dimension_resumes_and_swaps_in(
    vector_database_url: str, redis_url: str, tiny_clip_dir: Path, tmp_path: Path
) -> None:
    from mediajobs.config import Settings
    from mediajobs.db.vectors import EmbeddingIndexes
    from mediajobs.handlers.reindex import reindex
    from mediajobs.service.understanding import SemanticSearch
    from mediajobs.vision.catalog import ModelCatalog
    from mediajobs.vision.tags import load_vocabulary
    from mediajobs.vision.testing import write_tiny_clip
    from tests.support.ingest import ingest_all
    from tests.support.media import media_env, memory_store
    from tests.support.waiting import wait_for

    wide = write_tiny_clip(tmp_path / "wide-clip", embed_dim=48, seed=5, words=load_vocabulary())
    root = tmp_path / "photos"
    root.mkdir()
    for index in range(5):
        (root / f"p{index}.jpg").write_bytes(jpeg(photo(640 + 16 * index, 480)))
    dirs = (tiny_clip_dir, wide)
    settings = Settings(ingest_settle_seconds=0.0, clip_model_dirs=dirs)
    catalog = ModelCatalog(dirs)
    with memory_store() as memory:
        async with media_env(vector_database_url, redis_url, memory, settings=settings) as env:
            await ingest_all(env, root)
            indexes = EmbeddingIndexes(env.pool)

            async def embedded() -> bool:
                active = await indexes.active()
                return active is not None and await indexes.count(active) == 5

            await wait_for(embedded, timeout=60)
            old = await indexes.active()
            assert old is not None and (old.model, old.dimensions) == ("tiny-clip", 32)
            search = SemanticSearch(env.pool, catalog)
            await search.start()

            class Stop(Exception):
                pass

            def stop_after_two(progress: Any) -> None:
                if progress.done >= 2:
                    raise Stop

            with pytest.raises(Stop):
                await reindex(
                    env.pool, env.stores, catalog, "wide-clip", on_progress=stop_after_two, page=2
                )
            # Interrupted: search still answers from the old vectors, with the old model.
            state = await search.semantic()
            assert state.index == old and state.model is not None
            assert state.model.name == "tiny-clip"
            building = [i for i in await indexes.current() if i.state.value == "building"]
            assert [(i.model, i.dimensions) for i in building] == [("wide-clip", 48)]
            assert await indexes.count(building[0]) == 2

            done = await reindex(env.pool, env.stores, catalog, "wide-clip", page=2)
            assert done.phase == "swapped" and done.done == 3  # the rest only: resumed
            assert done.retired is not None and done.retired.id == old.id
            search._active = None  # skip the 5 s cache
            state = await search.semantic()
            assert state.index is not None and state.index.model == "wide-clip"
            assert state.model is not None and state.model.embed_dim == 48
            assert await indexes.count(state.index) == 5
            vector = await search.text_vector(state.model, "a dog")
            hits = await indexes.search(state.index, "alice", vector, limit=10)
            assert len(hits) == 5

            again = await reindex(env.pool, env.stores, catalog, "wide-clip")
            assert again.phase == "caught up" and again.done == 0


def test_reindex_says_why_it_cannot_start(
    database_url: str,
    tiny_clip_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    from mediajobs.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("MEDIAJOBS_ENV", "test")
    monkeypatch.delenv("MEDIAJOBS_CLIP_MODEL_DIR", raising=False)
    monkeypatch.delenv("MEDIAJOBS_JWT_SECRET", raising=False)  # the dev secret file serves
    assert main(["models", "reindex", "--model", " "]) == 2
    assert "give a model's name" in capsys.readouterr().err
    assert main(["models", "reindex"]) == 1
    assert "no CLIP model is configured" in capsys.readouterr().err
    monkeypatch.setenv("MEDIAJOBS_CLIP_MODEL_DIR", str(tiny_clip_dir))
    assert main(["models", "reindex", "--json"]) == 1  # the machine's Postgres: no pgvector
    assert '"code": "pgvector_missing"' in capsys.readouterr().out
    assert main(["models", "reindex", "--model", "nope"]) == 1
    assert "pgvector" in capsys.readouterr().err  # checked first: nothing can be indexed
