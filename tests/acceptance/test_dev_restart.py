"""`mediajobs dev` keeps its objects under MEDIAJOBS_DATA_DIR, like its database: a
restarted dev process still serves the variants it made, and an upload whose bytes arrived
before the restart completes after it."""

from __future__ import annotations

import json
import urllib.parse

import httpx
import pytest

from tests.conftest import free_port
from tests.support.images import jpeg, quadrants
from tests.support.serving import Serving
from tests.support.sse import bearer, realtime_env
from tests.support.uploads import finished, upload

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


async def test_a_restarted_dev_serves_the_same_variants_and_completes_an_upload_in_flight(
    database_url, redis_url, tmp_path
):
    data_dir = tmp_path / "data"
    env = {
        **realtime_env(database_url, redis_url),
        "MEDIAJOBS_ENV": "development",
        "MEDIAJOBS_DATA_DIR": str(data_dir),
    }
    port = free_port()  # variant URLs name the port: the second run serves the same one
    auth = bearer("dev")
    photo, other = jpeg(quadrants(640, 480)), jpeg(quadrants(600, 400))

    with Serving(env, port=port, command="dev") as first:
        async with httpx.AsyncClient(base_url=first.base, timeout=60) as client:
            item = await upload(client, auth, photo, "before.jpg")
            assert item["job"]["state"] == "succeeded", item["job"]
            before = {}
            for name, variant in item["variants"].items():
                fetched = await client.get(variant["url"])
                assert fetched.status_code == 200, (name, fetched.text)
                before[name] = (fetched.content, fetched.headers["etag"])
            # The next upload's bytes reach the store, then dev stops before `complete`.
            init = await client.post(
                "/media/upload/init",
                json={"filename": "during.jpg", "contentType": "image/jpeg", "size": len(other)},
                headers=auth,
            )
            signed = init.json()
            put = await client.put(signed["uploadURL"], content=other, headers=signed["headers"])
            assert put.status_code == 200, put.text
    assert first.returncode == 0, first.output[-3000:]
    assert len(before) >= 2

    with Serving(env, port=port, command="dev") as second:
        async with httpx.AsyncClient(base_url=second.base, timeout=60) as client:
            again = await client.get(f"/media/{item['id']}", headers=auth)
            assert again.status_code == 200, again.text
            for name, variant in again.json()["variants"].items():
                fetched = await client.get(variant["url"])
                assert fetched.status_code == 200, (name, fetched.text)
                assert (fetched.content, fetched.headers["etag"]) == before[name], name
                assert fetched.headers["content-type"] == "image/webp"
                revalidated = await client.get(
                    variant["url"], headers={"If-None-Match": before[name][1]}
                )
                assert revalidated.status_code == 304
            done = await client.post(
                "/media/upload/complete", json={"objectPath": signed["objectPath"]}, headers=auth
            )
            assert done.status_code == 202, done.text
            job = await finished(client, done.json()["jobId"], auth)
            assert job["state"] == "succeeded", job
            during = (await client.get(f"/media/{done.json()['mediaId']}", headers=auth)).json()
            assert during["status"] == "ready"
            assert set(during["variants"]) == set(before)
    assert second.returncode == 0, second.output[-3000:]
    # The objects are files under the data directory, beside the development secret.
    files = [path for path in (data_dir / "storage").rglob("*") if path.is_file()]
    stored = {json.loads(path.read_bytes().split(b"\n", 1)[0])["key"] for path in files}
    served = {
        urllib.parse.urlsplit(variant["url"]).path.removeprefix("/storage/")
        for variant in [*item["variants"].values(), *during["variants"].values()]
    }
    assert served <= stored
