"""media.process / review / delete / purge through the real queue, Postgres, Redis and
stores (memory over HTTP, S3 through moto), with the real imaging process pool."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from mediajobs.config import Settings
from mediajobs.db.media import MediaStatus
from mediajobs.handlers.imaging_pool import PoolOptions
from mediajobs.queue import JobSpec, JobState
from mediajobs.storage import Store
from tests.support.emulators import s3_store
from tests.support.images import camera_exif, decoded, jpeg, oriented_jpeg, photo, quadrants
from tests.support.media import CrashingPool, MediaEnv, media_env, memory_store, s3_worker_env
from tests.support.workers import start_worker_process, wait_for

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(params=["memory", "s3"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    if request.param == "memory":
        with memory_store() as memory:
            yield memory
    else:
        made = await asyncio.to_thread(s3_store, request.getfixturevalue("moto_url"))
        yield made
        await made.close()


@contextlib.asynccontextmanager
async def env_for(
    database_url: str, redis_url: str, store: Store, **kw: Any
) -> AsyncIterator[MediaEnv]:
    async with media_env(database_url, redis_url, store, **kw) as env:
        yield env


async def test_process_streams_decodes_uploads_and_emits_events_in_order(
    database_url: str, redis_url: str, store: Store
) -> None:
    source = jpeg(photo(3000, 2000), exif=camera_exif(gps=True))
    async with env_for(database_url, redis_url, store) as env, env.live_events() as live:
        media_id, job_id = await env.upload(source, "IMG_0001.JPG")
        job = await env.succeeded(job_id)
        events = await env.events(job_id)
        record = await env.record(media_id)
        await wait_for(lambda: any(e.terminal for e in live), timeout=10)

    # Redis carried the same events, in the same order, as Postgres recorded.
    assert [(e.type, json.loads(e.data)) for e in live if e.job_id == job_id] == events

    types = [t for t, _ in events]
    assert types[0] == "upload_started"
    assert types[-1] == "upload_complete"
    assert set(types[1:-1]) == {"upload_progress"}
    progress = [d["progress"] for t, d in events if t == "upload_progress"]
    assert progress == sorted(progress) and progress[-1] < 1.0
    messages = [d.get("message") for t, d in events if t == "upload_progress"]
    assert "downloading source" in messages and "decoded" in messages
    for name in ("thumb", "card", "preview", "detail", "detail_xl"):
        assert f"variant {name} encoded" in messages
        assert f"variant {name} uploaded" in messages
    assert messages.index("decoded") < messages.index("variant thumb encoded")
    assert messages.index("variant detail_xl encoded") < messages.index("variant thumb uploaded")

    result = events[-1][1]["result"]
    assert result == job.result
    assert result["status"] == "ready" and result["mediaId"] == str(media_id)
    assert (result["width"], result["height"]) == (3000, 2000)
    async with httpx.AsyncClient() as client:
        for name, variant in result["variants"].items():
            response = await client.get(variant["url"])
            assert response.status_code == 200, name
            image = decoded(response.content)
            assert image.format == "WEBP"
            assert image.size == (variant["width"], variant["height"])
            assert b"GPS" not in response.content and not image.getexif()
    assert result["variants"]["detail_xl"]["width"] == 2560
    assert result["blurDataURL"].startswith("data:image/webp;base64,")

    assert record.status is MediaStatus.READY
    assert record.detected_type == "image/jpeg"
    assert record.gps is not None and record.gps["latitude"] == pytest.approx(52.37, abs=0.01)
    assert record.exif is not None and record.exif["model"] == "EOS R5"
    assert "latitude" not in json.dumps(record.exif)
    assert record.sha256 is not None and len(record.sha256) == 64
    assert set(record.variants) == {"thumb", "card", "preview", "detail", "detail_xl"}


async def test_rejected_uploads_fail_with_their_code_and_never_touch_other_data(
    database_url: str, redis_url: str
) -> None:
    with memory_store() as store:
        async with env_for(database_url, redis_url, store) as env:
            good, good_job = await env.upload(jpeg(quadrants()), "good.jpg")
            await env.succeeded(good_job)
            # The bytes decide: JPEG bytes named and declared PNG are a JPEG named .jpg.
            renamed, renamed_job = await env.upload(jpeg(), "renamed.png", content_type="image/png")
            cases = {
                "corrupt_image": (jpeg(photo(1200, 900))[:5000], "cut.jpg", "image/jpeg"),
                "too_small": (jpeg(quadrants(120, 90)), "tiny.jpg", "image/jpeg"),
                "unsupported_type": (b"GIF89a" + b"\0" * 64, "a.gif", ""),
            }
            jobs = {}
            for code, (data, name, ctype) in cases.items():
                jobs[code] = await env.upload(data, name, content_type=ctype)
            for code, (media_id, job_id) in jobs.items():
                job = await env.finished(job_id)
                assert job.state is JobState.FAILED
                assert job.error is not None and job.error["code"] == code
                events = await env.events(job_id)
                assert events[-1][0] == "upload_failed"
                assert events[-1][1]["error"]["code"] == code
                record = await env.record(media_id)
                assert record.status is MediaStatus.FAILED
                assert record.error is not None and record.error["code"] == code
            await env.succeeded(renamed_job)
            record = await env.record(renamed)
            assert (record.status, record.detected_type) == (MediaStatus.READY, "image/jpeg")
            assert (record.original_filename, record.declared_type) == ("renamed.jpg", "image/png")
            assert (await env.record(good)).status is MediaStatus.READY
            assert [r.id for r in await env.gallery("alice")] == [good, renamed]


async def test_a_crashing_imaging_process_fails_only_its_own_job(
    database_url: str, redis_url: str
) -> None:
    pool = CrashingPool(PoolOptions(processes=2, timeout=60))
    with memory_store() as store:
        async with env_for(database_url, redis_url, store, imaging=pool) as env:
            crash = await env.upload(jpeg(photo(2000, 1500)), "crash.jpg")
            fine = [await env.upload(oriented_jpeg(6), f"ok{i}.jpg") for i in range(3)]
            job = await env.finished(crash[1])
            assert job.state is JobState.FAILED
            assert job.error is not None and job.error["code"] == "imaging_crashed"
            for media_id, job_id in fine:
                await env.succeeded(job_id)
                assert (await env.record(media_id)).status is MediaStatus.READY
            assert pool.crashes == 1
            # The pool replaced the dead process and keeps working.
            again = await env.upload(jpeg(quadrants(900, 700)), "after.jpg")
            await env.succeeded(again[1])


async def test_reprocessing_the_same_item_writes_the_same_keys(
    database_url: str, redis_url: str
) -> None:
    with memory_store() as store:
        async with env_for(database_url, redis_url, store) as env:
            media_id, job_id = await env.upload(jpeg(photo(1800, 1200)), "again.jpg")
            await env.succeeded(job_id)
            first = await env.keys()
            # A second attempt on a failed item (the state a crash leaves behind).
            async with env.pool.connection() as conn:
                await conn.execute(
                    "UPDATE media SET status = 'processing' WHERE id = %s", (media_id,)
                )
            again = await env.queue.enqueue(
                JobSpec("media.process", "alice", {"mediaId": str(media_id)})
            )
            await env.succeeded(again.id)
            assert await env.keys() == first
            record = await env.record(media_id)
            assert record.status is MediaStatus.READY
            assert {str(loc) for loc in record.locators()} == {
                str(store.locator(key)) for key in first
            }


# -- review gate ---------------------------------------------------------------------


async def test_review_gate_off_makes_ready_media_gallery_eligible_at_once(
    database_url: str, redis_url: str
) -> None:
    with memory_store() as store:
        async with env_for(database_url, redis_url, store) as env:
            media_id, job_id = await env.upload(jpeg(), "a.jpg")
            await env.succeeded(job_id)
            assert [r.id for r in await env.gallery("alice")] == [media_id]
            assert (await env.record(media_id)).review is None


async def test_review_on_with_provider_disabled_keeps_media_out_and_fails_retryable(
    database_url: str, redis_url: str
) -> None:
    with memory_store() as store:
        async with env_for(database_url, redis_url, store) as env:
            await env.policies.update({"photo_review_enabled": True})
            media_id, job_id = await env.upload(jpeg(), "a.jpg")
            job = await env.succeeded(job_id)
            assert job.result is not None and job.result["status"] == "in_review"
            review_job = await _review_job(env, media_id)
            finished = await env.finished(review_job)
            assert finished.state is JobState.FAILED
            assert finished.error == {
                "code": "review_provider_disabled",
                "message": "photo review is on but no review provider is configured",
                "retryable": True,
            }
            events = await env.events(review_job)
            assert [t for t, _ in events] == ["review_started", "review_failed"]
            assert events[-1][1]["error"]["retryable"] is True
            record = await env.record(media_id)
            assert record.status is MediaStatus.IN_REVIEW
            assert record.review is not None and record.review["code"] == "review_provider_disabled"
            assert record.review["jobId"] == str(review_job)  # the job its owner can retry
            assert await env.gallery("alice") == []


async def _review_job(env: MediaEnv, media_id: Any) -> Any:
    async with env.pool.connection() as conn:
        row = await (
            await conn.execute(
                "SELECT id FROM jobs WHERE kind = 'media.review' AND payload->>'mediaId' = %s",
                (str(media_id),),
            )
        ).fetchone()
    assert row is not None
    return row["id"]


class Reviewer:
    """A webhook review provider: answers from a script, records what it was asked."""

    def __init__(self, answers: list[tuple[int, dict[str, Any]]]) -> None:
        self.answers = answers
        self.requests: list[dict[str, Any]] = []
        reviewer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                reviewer.requests.append(
                    {
                        "body": json.loads(body),
                        "signature": self.headers.get("x-mediajobs-signature"),
                    }
                )
                status, answer = (
                    reviewer.answers.pop(0) if reviewer.answers else (200, {"allowed": True})
                )
                payload = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/review"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def reviewer() -> Iterator[Reviewer]:
    server = Reviewer([])
    yield server
    server.close()


def webhook_settings(url: str) -> Settings:
    return Settings(review_webhook_url=url, review_webhook_secret="s" * 32, review_timeout=5)


async def test_webhook_review_retries_a_5xx_then_allows(
    database_url: str, redis_url: str, reviewer: Reviewer
) -> None:
    reviewer.answers += [(503, {"error": "busy"}), (200, {"allowed": True, "reason": "fine"})]
    with memory_store() as store:
        async with env_for(
            database_url, redis_url, store, settings=webhook_settings(reviewer.url)
        ) as env:
            await env.policies.update(
                {"photo_review_enabled": True, "photo_review_provider": "webhook"}
            )
            media_id, job_id = await env.upload(jpeg(), "a.jpg")
            await env.succeeded(job_id)
            assert await env.gallery("alice") == []
            review_job = await _review_job(env, media_id)
            job = await env.succeeded(review_job, timeout=30)
            assert job.attempt == 2
            assert job.result == {
                "mediaId": str(media_id),
                "status": "ready",
                "allowed": True,
                "reason": "fine",
            }
            assert [r.id for r in await env.gallery("alice")] == [media_id]
            asked = reviewer.requests[-1]
            assert asked["body"]["mediaId"] == str(media_id)
            assert asked["signature"].startswith("sha256=")
            async with httpx.AsyncClient() as client:
                preview = await client.get(asked["body"]["previewURL"])
            assert preview.status_code == 200 and decoded(preview.content).format == "WEBP"


async def test_a_review_that_stops_for_good_records_its_error_and_job_on_the_item(
    database_url: str, redis_url: str, reviewer: Reviewer
) -> None:
    reviewer.answers += [(403, {"error": "forbidden"})]
    with memory_store() as store:
        async with env_for(
            database_url, redis_url, store, settings=webhook_settings(reviewer.url)
        ) as env:
            await env.policies.update(
                {"photo_review_enabled": True, "photo_review_provider": "webhook"}
            )
            media_id, job_id = await env.upload(jpeg(), "a.jpg")
            await env.succeeded(job_id)
            review_job = await _review_job(env, media_id)
            finished = await env.finished(review_job)
            assert finished.state is JobState.FAILED
            assert finished.error is not None and finished.error["retryable"] is True
            record = await env.record(media_id)
            assert record.status is MediaStatus.IN_REVIEW
            assert record.review is not None
            assert {k: record.review[k] for k in ("status", "provider", "code", "jobId")} == {
                "status": "error",
                "provider": "webhook",
                "code": "review_webhook_refused",
                "jobId": str(review_job),
            }

            # A review whose retries are used up (its last attempt got a 503) records its
            # code and its own job as well.
            reviewer.answers += [(503, {"error": "busy"})]
            last = await env.queue.enqueue(
                JobSpec("media.review", "alice", {"mediaId": str(media_id)}, max_attempts=1)
            )
            finished = await env.finished(last.id)
            assert finished.state is JobState.FAILED
            assert finished.error is not None and finished.error["retryable"] is True
            record = await env.record(media_id)
            assert record.status is MediaStatus.IN_REVIEW and record.review is not None
            assert (record.review["code"], record.review["jobId"]) == (
                "review_unavailable",
                str(last.id),
            )


async def test_replacement_cuts_over_only_when_it_passes_and_a_refused_one_leaves_the_old(
    database_url: str, redis_url: str, reviewer: Reviewer
) -> None:
    reviewer.answers += [(200, {"allowed": False, "reason": "blurry"})]
    with memory_store() as store:
        async with env_for(
            database_url, redis_url, store, settings=webhook_settings(reviewer.url)
        ) as env:
            old, job = await env.upload(jpeg(quadrants(800, 600)), "old.jpg")
            await env.succeeded(job)

            # A replacement that fails processing: the old photo stays live.
            broken, job = await env.upload(jpeg(photo(900, 700))[:3000], "new.jpg", replaces=old)
            assert (await env.finished(job)).state is JobState.FAILED
            assert (await env.record(broken)).status is MediaStatus.FAILED
            assert [r.id for r in await env.gallery("alice")] == [old]

            # With review on, a replacement waits in review (old still live), then is refused.
            await env.policies.update(
                {"photo_review_enabled": True, "photo_review_provider": "webhook"}
            )
            refused, job = await env.upload(jpeg(quadrants(1000, 700)), "r.jpg", replaces=old)
            await env.succeeded(job)
            assert [r.id for r in await env.gallery("alice")] == [old]
            await env.succeeded(await _review_job(env, refused))
            assert (await env.record(refused)).status is MediaStatus.REJECTED
            assert [r.id for r in await env.gallery("alice")] == [old]

            # Review off: a good replacement cuts over at once, taking the old one's place.
            await env.policies.update({"photo_review_enabled": False})
            new, job = await env.upload(jpeg(quadrants(1200, 900)), "n.jpg", replaces=old)
            await env.succeeded(job)
            gallery = await env.gallery("alice")
            assert [r.id for r in gallery] == [new]
            old_record, new_record = await env.record(old), await env.record(new)
            assert old_record.status is MediaStatus.DELETED
            assert old_record.replaced_by == new
            assert new_record.sort_order == old_record.sort_order
            # The old photo's objects are purged after the undo window.
            assert old_record.purge_after is not None


async def test_delete_hides_restore_returns_and_purge_removes_every_object(
    database_url: str, redis_url: str, store: Store
) -> None:
    async with env_for(database_url, redis_url, store) as env:
        keep, job = await env.upload(jpeg(quadrants(700, 500)), "keep.jpg")
        await env.succeeded(job)
        media_id, job = await env.upload(jpeg(photo(1800, 1200)), "gone.jpg")
        await env.succeeded(job)
        before = await env.keys()
        record = await env.record(media_id)
        own_keys = sorted(loc.key for loc in record.locators())
        assert set(own_keys) <= set(before)

        # Delete inside a 30 s window: hidden at once, objects still there; restore.
        deleted = await env.succeeded(await env.delete(media_id))
        assert deleted.result is not None and deleted.result["status"] == "deleted"
        assert [r.id for r in await env.gallery("alice")] == [keep]
        assert await env.keys() == before
        assert await env.media.restore(media_id, "bob") is None  # not bob's
        restored = await env.media.restore(media_id, "alice")
        assert restored is not None and restored.status is MediaStatus.READY
        assert {r.id for r in await env.gallery("alice")} == {keep, media_id}

        # Delete again with a 1 s window; deleting twice is one delete.
        await env.policies.update({"undo_window_seconds": 1})
        first = await env.succeeded(await env.delete(media_id))
        second = await env.succeeded(await env.delete(media_id))
        assert first.result == second.result
        purge = await _purge_jobs(env, media_id)
        # The restored delete's purge (due in 30 s, it will find nothing to do) and this one's.
        assert len(purge) == 2
        done = await env.succeeded(purge[-1], timeout=30)
        assert done.result is not None and done.result["purged"] is True
        gone = await env.record(media_id)
        assert gone.purged_at is not None
        assert await env.media.restore(media_id, "alice") is None
        remaining = await env.keys()
        assert not set(own_keys) & set(remaining)
        assert set(remaining) == set(before) - set(own_keys)


async def _purge_jobs(env: MediaEnv, media_id: Any) -> list[Any]:
    async with env.pool.connection() as conn:
        rows = await (
            await conn.execute(
                "SELECT id FROM jobs WHERE kind = 'media.purge' AND payload->>'mediaId' = %s "
                "ORDER BY created_at",
                (str(media_id),),
            )
        ).fetchall()
    return [row["id"] for row in rows]


# -- crash recovery ------------------------------------------------------------------


async def test_a_rerun_after_sigkill_mid_upload_leaves_no_orphan_objects(
    database_url: str, redis_url: str, moto_url: str
) -> None:
    store = await asyncio.to_thread(s3_store, moto_url)
    env_vars = s3_worker_env(moto_url, store.bucket, redis_url)
    app = ["--app", "mediajobs.handlers:build_registry"]
    try:
        async with media_env(database_url, redis_url, store, worker=False) as env:
            # Slow, large encodes widen the window in which the worker dies mid-job.
            await env.policies.update({"webp_method": 6})
            media_id, job_id = await env.upload(jpeg(photo(5000, 3750)), "big.jpg")
            doomed = start_worker_process(database_url, *app, env=env_vars)

            async def uploading() -> bool:
                job = await env.queue.get(job_id)
                assert job is not None and not job.state.finished, "finished before the kill"
                return bool(job.message and job.message.endswith("uploaded"))

            await wait_for(uploading, timeout=60, interval=0.005)
            assert await doomed.kill_group() == -signal.SIGKILL
            partial = await env.keys()
            record = await env.record(media_id)
            assert record.status is MediaStatus.PROCESSING
            assert 1 < len(partial) < 6  # the source and some, not all, variants

            rescuer = start_worker_process(database_url, *app, env=env_vars)
            try:
                job = await env.succeeded(job_id, timeout=60)
            finally:
                assert await rescuer.stop() == 0, rescuer.stderr[-3000:]
            assert job.attempt == 2
            record = await env.record(media_id)
            assert record.status is MediaStatus.READY
            owned = sorted(locator.key for locator in record.locators())
            assert await env.keys() == owned  # nothing else in the bucket: no orphans
            assert len(owned) == 6
            assert set(partial) <= set(owned)
            types = [t for t, _ in await env.events(job_id)]
            assert types.count("upload_started") == 2
            assert types[-1] == "upload_complete"
    finally:
        await store.close()


async def test_a_delete_job_that_runs_after_a_restore_leaves_the_item_alone(
    database_url: str, redis_url: str
) -> None:
    with memory_store() as store:
        async with env_for(database_url, redis_url, store, worker=False) as env:
            media_id, _ = await env.upload(jpeg(), "a.jpg")
            async with env.pool.connection() as conn:  # processed, as far as this test goes
                await conn.execute("UPDATE media SET status = 'ready' WHERE id = %s", (media_id,))
            # What DELETE /media does: hide at once, and enqueue the job with the moment.
            hidden = await env.media.soft_delete(media_id, "alice", undo_window=30)
            assert hidden is not None and hidden.deleted_at is not None
            job = await env.queue.enqueue(
                JobSpec(
                    "media.delete",
                    "alice",
                    {"mediaId": str(media_id), "deletedAt": hidden.deleted_at.isoformat()},
                )
            )
            assert await env.media.restore(media_id, "alice") is not None
        async with env_for(database_url, redis_url, store) as env:
            done = await env.succeeded(job.id)
            assert done.result == {"mediaId": str(media_id), "status": "ready", "purged": False}
            assert (await env.record(media_id)).status is MediaStatus.READY
            purges = await _purge_jobs(env, media_id)
            assert purges == []


async def test_an_upload_keeps_its_display_name_from_init_to_complete_for_its_owner_only(
    database_url: str, redis_url: str
) -> None:
    with memory_store() as store:
        async with env_for(database_url, redis_url, store) as env:
            media = env.media
            key = "media/auth0~7C5f7c8ec7/uploads/0d9c/file.jpg"
            await media.start_upload(key, "auth0|5f7c8ec7", "🌅.jpg", "image/jpeg")
            async with media.transaction() as conn:
                assert await media.take_upload(key, "auth0_5f7c8ec7", conn=conn) is None
            async with media.transaction() as conn:
                assert await media.take_upload(key, "auth0|5f7c8ec7", conn=conn) == "🌅.jpg"
            async with media.transaction() as conn:  # taken once: the item has it now
                assert await media.take_upload(key, "auth0|5f7c8ec7", conn=conn) is None
            # The worker gives the item's name the extension of what the bytes are, and the
            # owner id stays the sub itself.
            media_id, job_id = await env.upload(
                jpeg(quadrants()), "IMG_0001.HEIC", content_type="image/heic", owner="auth0|x@y"
            )
            await env.succeeded(job_id)
            record = await env.record(media_id)
            assert (record.owner_id, record.original_filename) == ("auth0|x@y", "IMG_0001.jpg")
            assert record.source.key.startswith("media/auth0~7Cx~40y/uploads/")
            for variant in record.variants.values():
                assert variant["locator"].split("/", 3)[3].startswith("media/auth0~7Cx~40y/images/")
