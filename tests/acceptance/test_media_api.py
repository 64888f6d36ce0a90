"""The upload flow end to end with real processes: init -> PUT/POST straight to storage ->
complete -> SSE progress -> listed ready -> delete, restore, delete -> purged after the undo
window. `mediajobs serve` plus a separate `mediajobs worker` on the memory store (the worker
reaches the API's store over HTTP) and on S3 (moto's server); and `mediajobs dev`, where
the API and the worker share one process."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from mediajobs.service.auth import Authenticator
from tests.conftest import free_port
from tests.support.emulators import S3_CREDENTIALS, s3_store
from tests.support.images import camera_exif, decoded, jpeg, photo
from tests.support.serving import Serving
from tests.support.sse import SECRET, bearer, realtime_env, watch_job
from tests.support.workers import start_worker_process

pytestmark = pytest.mark.timeout(180)

ADMIN = {"Authorization": f"Bearer {Authenticator(SECRET).issue_token('ops', roles=['admin'])}"}


@contextlib.asynccontextmanager
async def deployment(
    kind: str, database_url: str, redis_url: str, request: Any
) -> AsyncIterator[Any]:
    """A running API (and worker) on the memory store or on S3; yields (base URL, bucket
    lister)."""
    if kind == "memory-dev":
        with Serving(realtime_env(database_url, redis_url), command="dev") as api:
            yield api.base, None
        return
    worker_settings = {
        "MEDIAJOBS_LEASE_SECONDS": "5",
        "MEDIAJOBS_POLL_INTERVAL": "0.2",
        "MEDIAJOBS_IMAGING_PROCESSES": "1",
    }
    store = None
    if kind == "s3":
        moto = request.getfixturevalue("moto_url")
        store = await asyncio.to_thread(s3_store, moto)
        worker_settings.update(
            S3_CREDENTIALS,
            S3_BUCKET=store.bucket,
            S3_ENDPOINT_URL=moto,
            S3_REGION="us-east-1",
            S3_FORCE_PATH_STYLE="true",
        )
    port = free_port()
    # The memory store lives in the API process; the separate worker reaches it over HTTP.
    env = realtime_env(database_url, redis_url, MEDIAJOBS_PORT=str(port), **worker_settings)
    worker = start_worker_process(
        database_url, "--app", "mediajobs.handlers:build_registry", env=env
    )
    try:
        with Serving(env, port=port) as api:
            yield api.base, store
    finally:
        code = await worker.stop()
        if store is not None:
            await store.close()
        assert code == 0, worker.stderr[-3000:]


async def put_upload(client: httpx.AsyncClient, init: dict[str, Any], data: bytes) -> None:
    """Send the bytes exactly as the presigned request says: straight to storage."""
    if init["method"] == "PUT":
        response = await client.put(init["uploadURL"], content=data, headers=init["headers"])
    else:
        files = {"file": ("upload", data, init["headers"].get("Content-Type", "image/jpeg"))}
        response = await client.post(init["uploadURL"], data=init["fields"], files=files)
    assert response.status_code in (200, 201, 204), response.text


@pytest.mark.parametrize("kind", ["memory", "s3", "memory-dev"])
async def test_upload_process_list_delete_restore_and_purge(
    kind: str, database_url: str, redis_url: str, request: pytest.FixtureRequest
) -> None:
    alice = bearer("alice")
    source = jpeg(photo(2400, 1600), exif=camera_exif(gps=True))
    async with (
        deployment(kind, database_url, redis_url, request) as (base, bucket),
        httpx.AsyncClient(base_url=base, timeout=30) as client,
    ):
        rules = (await client.get("/v1/meta/media-rules")).json()
        assert rules["variants"][0] == {"name": "thumb", "size": 320}
        policy = await client.put(
            "/v1/admin/site-policies", json={"undoWindowSeconds": 2}, headers=ADMIN
        )
        assert policy.status_code == 200, policy.text

        init = await client.post(
            "/media/upload/init",
            json={"filename": "IMG_0001.jpg", "contentType": "image/jpeg", "size": len(source)},
            headers=alice,
        )
        assert init.status_code == 200, init.text
        upload = init.json()
        assert upload["objectPath"].startswith("media/alice/uploads/")
        await put_upload(client, upload, source)

        watch = await watch_job(client, base, "alice")
        done = await client.post(
            "/media/upload/complete", json={"objectPath": upload["objectPath"]}, headers=alice
        )
        assert done.status_code == 202, done.text
        job_id, media_id = done.json()["jobId"], done.json()["mediaId"]
        watch.job = uuid.UUID(job_id)
        again = await client.post(
            "/media/upload/complete", json={"objectPath": upload["objectPath"]}, headers=alice
        )
        assert again.json() == done.json()  # the same object completes to the same job

        stream = await asyncio.wait_for(watch.stream, 120)
        mine = [e for e in stream.data() if e.get("jobId") == job_id]
        types = [
            t for t, e in zip(stream.types, stream.data(), strict=True) if e.get("jobId") == job_id
        ]
        assert types[0] == "upload_started" and types[-1] == "upload_complete", types
        progress = [e["progress"] for e in mine if "progress" in e]
        assert len(progress) >= 10 and progress == sorted(progress)
        result = mine[-1]["result"]
        assert result["status"] == "ready"
        for name, variant in result["variants"].items():
            fetched = await client.get(variant["url"])
            assert fetched.status_code == 200, name
            image = decoded(fetched.content)
            assert image.size == (variant["width"], variant["height"])
            assert b"GPS" not in fetched.content

        listed = (await client.get("/media", headers=alice)).json()
        [item] = listed["items"]
        assert (item["id"], item["status"], item["jobId"]) == (media_id, "ready", job_id)
        assert set(item["variants"]) == {"thumb", "card", "preview", "detail", "detail_xl"}
        assert "gps" not in str(item).lower() and "exif" not in item
        path = item["path"]

        deleted = await client.delete(f"/media/{path}", headers=alice)
        assert deleted.status_code == 202, deleted.text
        assert (await client.get("/media", headers=alice)).json()["items"] == []
        restored = await client.post("/media/restore", json={"path": path}, headers=alice)
        assert restored.status_code == 200, restored.text
        assert [i["id"] for i in (await client.get("/media", headers=alice)).json()["items"]] == [
            media_id
        ]

        deleted = await client.delete(f"/media/{media_id}", headers=alice)
        assert deleted.status_code == 202
        urls = [v["url"] for v in item["variants"].values()]
        deadline = time.monotonic() + 60
        while True:  # the undo window (2 s) passes, then media.purge removes every object
            statuses = {(await client.get(url)).status_code for url in urls}
            if statuses == {404} or (bucket is not None and statuses <= {403, 404}):
                break
            assert time.monotonic() < deadline, statuses
            await asyncio.sleep(0.5)
        if bucket is not None:
            assert (await bucket.list("media/alice/")).items == []
        else:  # the private source is gone from the memory store too
            assert (await client.get(f"/storage/{path}")).status_code == 404
        gone = await client.post("/media/restore", json={"path": path}, headers=alice)
        assert gone.status_code == 409
