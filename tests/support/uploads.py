"""Uploading through the HTTP API as a browser does, in acceptance tests: init -> PUT
straight to storage -> complete -> wait for the processing job."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

FINISHED = ("succeeded", "failed", "cancelled")


async def finished(
    client: httpx.AsyncClient, job_id: str, auth: dict[str, str], timeout: float = 60
) -> dict[str, Any]:
    """``GET /jobs/{id}`` once the job has ended; AssertionError after ``timeout`` seconds."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                job: dict[str, Any] = (await client.get(f"/jobs/{job_id}", headers=auth)).json()
                if job["state"] in FINISHED:
                    return job
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"job {job_id} did not finish in {timeout} s") from None


async def upload(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    data: bytes,
    filename: str = "a.jpg",
    content_type: str | None = "image/jpeg",
) -> dict[str, Any]:
    """init, PUT, complete and wait for processing; the item as ``GET /media/{id}`` shows
    it, plus ``job`` (the finished job) and ``objectPath``."""
    init = await client.post(
        "/media/upload/init",
        json={"filename": filename, "contentType": content_type, "size": len(data)},
        headers=auth,
    )
    assert init.status_code == 200, init.text
    signed = init.json()
    put = await client.put(signed["uploadURL"], content=data, headers=signed["headers"])
    assert put.status_code == 200, put.text
    done = await client.post(
        "/media/upload/complete", json={"objectPath": signed["objectPath"]}, headers=auth
    )
    assert done.status_code == 202, done.text
    job = await finished(client, done.json()["jobId"], auth)
    item = await client.get(f"/media/{done.json()['mediaId']}", headers=auth)
    assert item.status_code == 200, item.text
    return {**item.json(), "job": job, "objectPath": signed["objectPath"]}
