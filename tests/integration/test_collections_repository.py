"""Collections in Postgres (``db/collections.py``): one sync attaches, detaches and reorders;
concurrent syncs from one version apply exactly once; only the owner's live media attach."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable

import pytest

from mediajobs.db.collections import CollectionRefused, CollectionRepository
from mediajobs.db.media import MediaRepository
from mediajobs.db.pool import Pool


async def item(pool: Pool, owner: str, status: str = "ready") -> uuid.UUID:
    """A media row of ``owner`` in ``status``."""
    media_id = uuid.uuid4()
    deleted = "now()" if status == "deleted" else "NULL"
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO media (id, owner_id, status, source_locator, deleted_at)"
            f" VALUES (%s, %s, %s, %s, {deleted})",
            (media_id, owner, status, f"memory://b/media/{owner}/{media_id}"),
        )
    return media_id


async def refused(code: str, sync: Awaitable[object]) -> None:
    with pytest.raises(CollectionRefused) as caught:
        await sync
    assert caught.value.code == code


async def test_one_sync_attaches_detaches_and_reorders_and_a_repeat_changes_nothing(
    pool: Pool,
) -> None:
    repo = CollectionRepository(pool)
    a, b, c = [await item(pool, "ada") for _ in range(3)]
    assert await repo.get("artist", "ada") is None
    first = await repo.sync("artist", "ada", "ada", [(a, "profile"), (b, "gallery")])
    assert (first.owner_id, first.version) == ("ada", 1)
    assert [(x.media_id, x.purpose, x.position) for x in first.items] == [
        (a, "profile", 0),
        (b, "gallery", 1),
    ]
    second = await repo.sync("artist", "ada", "ada", [(c, "gallery"), (a, "gallery")], if_version=1)
    assert second.version == 2
    assert [(x.media_id, x.purpose) for x in second.items] == [(c, "gallery"), (a, "gallery")]
    again = await repo.sync("artist", "ada", "ada", [(c, "gallery"), (a, "gallery")])
    assert again == second  # idempotent: the version stays
    assert await repo.get("artist", "ada") == second
    emptied = await repo.sync("artist", "ada", "ada", [], if_version=2)
    assert (emptied.version, emptied.items) == (3, ())


async def test_two_syncs_from_one_version_apply_exactly_once(pool: Pool) -> None:
    repo = CollectionRepository(pool)
    a, b = await item(pool, "sam"), await item(pool, "sam")
    base = await repo.sync("listing", "8412", "sam", [(a, "gallery")])
    results = await asyncio.gather(
        repo.sync("listing", "8412", "sam", [(b, "gallery")], if_version=base.version),
        repo.sync(
            "listing", "8412", "sam", [(a, "cover"), (b, "gallery")], if_version=base.version
        ),
        return_exceptions=True,
    )
    applied = [r for r in results if not isinstance(r, BaseException)]
    stale = [r for r in results if isinstance(r, CollectionRefused)]
    assert len(applied) == 1 and len(stale) == 1, results
    assert stale[0].code == "stale_collection"
    assert await repo.get("listing", "8412") == applied[0]


async def test_only_the_owners_live_media_attach_and_the_entity_stays_its_first_owners(
    pool: Pool,
) -> None:
    repo = CollectionRepository(pool)
    mine, theirs = await item(pool, "ada"), await item(pool, "bob")
    gone = await item(pool, "ada", status="deleted")
    await refused("media_not_found", repo.sync("artist", "ada", "ada", [(theirs, "gallery")]))
    await refused("media_not_found", repo.sync("artist", "ada", "ada", [(gone, "gallery")]))
    await refused(
        "duplicate_media", repo.sync("artist", "ada", "ada", [(mine, "gallery"), (mine, "cover")])
    )
    two = [(mine, "profile"), (await item(pool, "ada"), "profile")]
    await refused("second_profile", repo.sync("artist", "ada", "ada", two))
    made = await repo.sync("artist", "ada", "ada", [(mine, "profile")])
    assert made.owner_id == "ada"
    await refused("entity_not_found", repo.sync("artist", "ada", "bob", [(theirs, "gallery")]))
    # An admin manages any entity, with its owner's media.
    await refused(
        "media_not_found",
        repo.sync("artist", "ada", "root", [(theirs, "gallery")], manage_any=True),
    )
    managed = await repo.sync("artist", "ada", "root", [(mine, "gallery")], manage_any=True)
    assert (managed.owner_id, managed.version) == ("ada", made.version + 1)
    await refused("stale_collection", repo.sync("artist", "ada", "ada", [], if_version=0))


async def test_an_attachment_stays_while_its_item_is_deleted(pool: Pool) -> None:
    repo = CollectionRepository(pool)
    a, b = await item(pool, "ada"), await item(pool, "ada")
    await repo.sync("artist", "ada", "ada", [(a, "gallery"), (b, "gallery")])
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE media SET status = 'deleted', deleted_at = now() WHERE id = %s", (a,)
        )
    kept = await repo.get("artist", "ada")
    assert kept is not None
    assert [(x.media_id, x.position) for x in kept.items] == [(a, 0), (b, 1)]


async def test_a_replacement_takes_the_old_items_place_and_purpose_at_cutover(pool: Pool) -> None:
    repo, media = CollectionRepository(pool), MediaRepository(pool)
    first, old, last = [await item(pool, "ada") for _ in range(3)]
    await repo.sync("artist", "ada", "ada", [(first, "gallery"), (old, "profile"), (last, "cover")])
    new = await item(pool, "ada")
    async with pool.connection() as conn:
        await conn.execute("UPDATE media SET replaces = %s WHERE id = %s", (old, new))
    before = await repo.get("artist", "ada")
    assert before is not None and new not in [x.media_id for x in before.items]  # not before
    record = await media.get(new)
    assert record is not None
    async with media.transaction() as conn:
        assert await media.cut_over(record, undo_window=30, conn=conn) is not None
    after = await repo.get("artist", "ada")
    assert after is not None and after.version == before.version + 1
    assert [(x.media_id, x.purpose, x.position) for x in after.items] == [
        (first, "gallery", 0),
        (new, "profile", 1),
        (last, "cover", 2),
    ]


async def test_a_purge_detaches_the_item_from_its_collections(pool: Pool) -> None:
    repo, media = CollectionRepository(pool), MediaRepository(pool)
    a, b = await item(pool, "ada"), await item(pool, "ada")
    await repo.sync("artist", "ada", "ada", [(a, "gallery"), (b, "gallery")])
    made = await repo.sync("listing", "1", "ada", [(a, "cover")])
    await media.soft_delete(b, "ada", undo_window=30)
    await media.restore(b, "ada")
    await media.mark_purged(b)  # restored meanwhile: neither purged nor detached
    await media.soft_delete(a, "ada", undo_window=0)
    await media.mark_purged(a)
    artist, listing = await repo.get("artist", "ada"), await repo.get("listing", "1")
    assert artist is not None and [x.media_id for x in artist.items] == [b]
    assert listing is not None and (listing.items, listing.version) == ((), made.version + 1)


async def test_the_public_fingerprint_moves_with_every_visible_change_and_matches_its_rows(
    pool: Pool,
) -> None:
    repo, media = CollectionRepository(pool), MediaRepository(pool)
    a, b = await item(pool, "ada"), await item(pool, "ada")
    hidden = await item(pool, "ada", status="in_review")
    assert await repo.public_fingerprint("artist", "ada") is None
    assert await repo.public_view("artist", "ada") is None
    await repo.sync("artist", "ada", "ada", [(a, "gallery"), (b, "gallery"), (hidden, "cover")])
    seen = []
    for step in range(4):
        found = await repo.public_view("artist", "ada")
        assert found is not None
        fingerprint, view = found
        assert fingerprint == await repo.public_fingerprint("artist", "ada")  # one snapshot
        assert hidden not in [record.id for _, record in view.items]  # in review: not public
        assert fingerprint not in seen  # every step below changes what the public sees
        seen.append(fingerprint)
        if step == 0:  # reorder
            await repo.sync(
                "artist", "ada", "ada", [(b, "gallery"), (a, "gallery"), (hidden, "cover")]
            )
        elif step == 1:  # and back: the same rows as at first, at a new version
            await repo.sync(
                "artist", "ada", "ada", [(a, "gallery"), (b, "gallery"), (hidden, "cover")]
            )
        elif step == 2:  # an edit of a shown item
            await media.update_fields(a, "ada", {"alt_text": "a red door"})
