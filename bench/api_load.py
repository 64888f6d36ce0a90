"""API load: concurrent clients doing the upload flow (init -> PUT -> complete) against one
API process (`mediajobs serve`, real Postgres and Redis, the memory store).

The load is open-loop: flows start at a fixed rate whatever the latencies, so a slow server
cannot slow the offered load down and hide its own latency. Each flow is a new upload by
one of many users; completion writes the media row and enqueues ``media.process`` in one
transaction (no worker runs, so the figures are the API's alone). The PUT goes to the same
process's ``/storage`` (in production it goes to the bucket, so this is the harder case).

    python bench/api_load.py [--rate 200] [--seconds 20] [--size 20000]

``--rate`` is upload flows per second: each flow is three requests, so the API serves three
times that many requests per second. Target (issue 6): ``upload/complete`` p99 <= 25 ms at
200 requests/s.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import sys
import time
import uuid
from collections import defaultdict
from typing import Any

import httpx

from common import (
    DEFAULT_DSN,
    drop_database,
    fresh_database,
    percentile,
    record,
    start_serve,
)

SECRET = "bench-secret-" + "a" * 40
USERS = 500


def image_bytes(size: int) -> bytes:
    from PIL import Image

    side = 64
    while True:
        buffer = io.BytesIO()
        Image.effect_noise((side, side), 60).convert("RGB").save(buffer, "JPEG", quality=95)
        if buffer.tell() >= size or side > 4000:
            return buffer.getvalue()
        side = int(side * 1.3)


async def flow(
    client: httpx.AsyncClient,
    token: str,
    data: bytes,
    timings: dict[str, list[float]],
    statuses: dict[str, dict[int, int]],
) -> None:
    headers = {"Authorization": f"Bearer {token}"}

    async def timed(name: str, call: Any) -> httpx.Response:
        started = time.perf_counter()
        response: httpx.Response = await call
        timings[name].append((time.perf_counter() - started) * 1000)
        statuses[name][response.status_code] += 1
        return response

    body = {
        "filename": f"{uuid.uuid4().hex[:8]}.jpg",
        "contentType": "image/jpeg",
        "size": len(data),
    }
    init = await timed("upload/init", client.post("/media/upload/init", json=body, headers=headers))
    if init.status_code != 200:
        return
    upload = init.json()
    put = await timed(
        "PUT storage", client.put(upload["uploadURL"], content=data, headers=upload["headers"])
    )
    if put.status_code != 200:
        return
    await timed(
        "upload/complete",
        client.post(
            "/media/upload/complete", json={"objectPath": upload["objectPath"]}, headers=headers
        ),
    )


async def drive(base: str, rate: float, seconds: float, data: bytes) -> dict[str, Any]:
    from mediajobs.service.auth import Authenticator

    auth = Authenticator(SECRET)
    tokens = [auth.issue_token(f"user{i}", ttl=3600) for i in range(USERS)]
    timings: dict[str, list[float]] = defaultdict(list)
    statuses: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    limits = httpx.Limits(max_connections=400, max_keepalive_connections=400)
    async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as client:
        # Warm up: connections, the first plans, imports.
        await asyncio.gather(
            *(flow(client, tokens[i], data, defaultdict(list), statuses) for i in range(20))
        )
        statuses.clear()
        tasks = []
        started = time.perf_counter()
        total = int(rate * seconds)
        for n in range(total):
            due = started + n / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(
                asyncio.create_task(flow(client, tokens[n % USERS], data, timings, statuses))
            )
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - started
    return {"timings": timings, "statuses": statuses, "elapsed": elapsed, "flows": total}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=200.0, help="upload flows per second")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--size", type=int, default=20_000, help="bytes per upload")
    parser.add_argument("--port", type=int, default=18099)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()

    name, dsn = fresh_database(DEFAULT_DSN, "api")
    api = None
    try:
        import asyncio as _asyncio

        from mediajobs.db.migrate import migrate

        _asyncio.run(migrate(dsn))
        import psycopg

        with psycopg.connect(dsn, autocommit=True) as conn:  # no per-user cap in the way
            conn.execute("UPDATE site_policies SET max_batch_size = 1000")
        api = start_serve(dsn, args.redis, args.port, SECRET)
        data = image_bytes(args.size)
        run = asyncio.run(drive(f"http://127.0.0.1:{args.port}", args.rate, args.seconds, data))
    finally:
        if api is not None:
            api.terminate()
            api.wait(timeout=30)
        drop_database(DEFAULT_DSN, name)

    figures: dict[str, Any] = {
        "flows_per_s": round(run["flows"] / run["elapsed"], 1),
        "requests_per_s": round(3 * run["flows"] / run["elapsed"], 1),
        "bytes_per_upload": len(data),
    }
    rows = []
    for endpoint, values in run["timings"].items():
        key = endpoint.replace("/", "_").replace(" ", "_").lower()
        p50, p99 = percentile(values, 0.5), percentile(values, 0.99)
        figures[f"{key}_p50_ms"] = round(p50, 2)
        figures[f"{key}_p99_ms"] = round(p99, 2)
        figures[f"{key}_count"] = len(values)
        codes = dict(run["statuses"][endpoint])
        figures[f"{key}_statuses"] = {str(k): v for k, v in codes.items()}
        rows.append(
            f"| {endpoint} | {len(values)} | {len(values) / run['elapsed']:.0f} | {p50:.1f} | "
            f"{p99:.1f} | {codes} |"
        )
        print(rows[-1], file=sys.stderr)
    if not args.no_record:
        table = "\n".join(
            [
                f"Offered load: {args.rate:g} upload flows/s for {args.seconds:g} s "
                f"({3 * args.rate:g} requests/s), {len(data)} bytes per upload.",
                "",
                "| endpoint | requests | per s | p50 ms | p99 ms | statuses |",
                "|---|---|---|---|---|---|",
                *rows,
            ]
        )
        record(
            "API load: the upload flow against one API process",
            table,
            f"python bench/api_load.py --rate {args.rate:g} --seconds {args.seconds:g}",
        )
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
