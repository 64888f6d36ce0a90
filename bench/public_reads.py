"""Public reads: ``GET /public/entities/{type}/{id}`` for one collection of 50 photos at a
fixed rate against ONE API process (`mediajobs serve`, real Postgres and Redis, the memory
store), then the same with ``If-None-Match``, then a change in the middle of the reads.

    python bench/public_reads.py [--rate 500] [--seconds 20] [--warmup 3] [--items 50]
                                 [--change-seconds 6] [--clients N] [--shards 16]
                                 [--capacity-seconds 5] [--profile FILE] [--no-record]

Setup: a fresh database with the migrations applied; ``--items`` media items of one user,
written through ``MediaRepository`` the way ``media.process`` finishes a photo (4032x3024,
``ready``, the site policy's five WebP variants 320 ... 2560 with their locators in the
server's store, a real blurDataURL, EXIF and GPS as the pipeline stores them); then
attached in order with ``PUT /entities/listing/bench/media`` (one ``profile``, one
``cover``, the rest ``gallery``) with a bearer token of that user.

The load is open-loop, from this process (the server is another): requests go out on a
fixed schedule whatever the latencies, and each latency runs from the moment its request
was *scheduled* (not sent) to its full response, so a stalled server cannot hide its latency
by slowing the load down (no coordinated omission). The generator reports its own cost: how
late it sent (``gen_lag_p99_ms``; more than a few ms means it, not the server, was short of
CPU) and its CPU per request (it shares the machine with the server and Postgres). Once
``MAX_INFLIGHT`` requests wait for answers it sends no more (``not_sent``, counted as
errors): the server is saturated by then. Phases, each after ``--warmup`` seconds at the
same rate (excluded):

1. ``plain``: GETs without a validator; every answer must be 200 with the whole collection.
2. ``conditional``: GETs with ``If-None-Match`` of the current ETag; the 304 rate is the
   share of answers that were 304 (1.0 expected; requests not sent are not answers).
3. ``change``: ``--clients`` simulated clients take turns at the same rate, each sending the
   ETag it last saw; halfway through, the items are reordered (``PUT``, reversed order). Each
   client should revalidate to 200 once (more often only when its next request left before
   that 200 came back) and then get 304 again for the new ETag; a request due after the PUT
   answered that still gets the old content is stale.
4. capacity: a closed loop of ``--shards`` clients, plain then with ``If-None-Match``, for
   ``--capacity-seconds`` each: the most answers per second this one process gives.

Target (issue 15): p99 <= 10 ms at 500 requests/s on one process (plain and conditional),
every request answered. ``--profile FILE`` runs the server under cProfile (slower: it shows
where the time goes, its figures are not results; nothing is recorded) and prints its top
functions. Ends with one JSON line of figures; ``targets_met`` is the target,
``revalidation_ok`` the 304 and change-phase behaviour.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import pstats
import signal
import socket
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import httpx
import psycopg
import uvloop

from common import DEFAULT_DSN, drop_database, fresh_database, percentile, record, start_serve

SECRET = "bench-secret-" + "p" * 40
OWNER = "bench"
ENTITY = ("listing", "bench")
SOURCE_SIZE = (4032, 3024)
TARGET_P99_MS = 10.0
MAX_INFLIGHT = 256  # requests the generator leaves unanswered before it stops sending


# -- setup -------------------------------------------------------------------------------


def blur_source(n: int) -> Any:
    """A small photo-like image (a gradient, a shape and grain), different for each ``n``."""
    from PIL import Image, ImageDraw

    gradient = Image.radial_gradient("L").resize((400, 300))
    noise = Image.effect_noise((400, 300), 40 + n % 20)
    tint = Image.new("L", (400, 300), (37 * n) % 256)
    image = Image.merge("RGB", (gradient, noise, tint))
    ImageDraw.Draw(image).ellipse((n * 5 % 300, 40, n * 5 % 300 + 90, 160), fill=(240, 200, 90))
    return image


async def seed(dsn: str, serve_env: dict[str, str], count: int) -> tuple[list[uuid.UUID], int]:
    """``count`` ready photos of OWNER, each finished as ``media.process`` finishes one;
    returns their ids in creation order and the number of variants each has."""
    from mediajobs.config import Settings
    from mediajobs.db import open_pool
    from mediajobs.db.media import MediaRepository, MediaStatus
    from mediajobs.imaging import blur_data_url
    from mediajobs.imaging.pipeline import fit
    from mediajobs.storage.factory import stores_for
    from mediajobs.storage.keys import upload_key, variant_key

    stores = stores_for(Settings.from_env(serve_env))  # the locators the server resolves
    pool = await open_pool(dsn, name="bench-seed", min_size=1, max_size=2)
    ids: list[uuid.UUID] = []
    try:
        async with pool.connection() as conn:
            row = await (await conn.execute("SELECT variants FROM site_policies")).fetchone()
        assert row is not None
        sizes = [(v["name"], int(v["size"])) for v in row["variants"]]
        media = MediaRepository(pool)
        width, height = SOURCE_SIZE
        for n in range(count):
            media_id = uuid.uuid4()
            name = f"IMG_{4000 + n}.jpg"
            source = stores.locate(upload_key(OWNER, name))
            await media.create(
                owner_id=OWNER, source=source, media_id=media_id, original_filename=name,
                declared_type="image/jpeg", alt_text=f"Photo {n + 1} of the bench listing",
            )  # fmt: skip
            started = await media.start_processing(media_id, uuid.uuid4())
            assert started is not None
            variants = {}
            for variant, long_edge in sizes:
                w, h = fit(width, height, long_edge)
                variants[variant] = {
                    "locator": str(stores.locate(variant_key(OWNER, media_id, variant))),
                    "width": w,
                    "height": h,
                    "bytes": w * h // 10,  # about what quality 80 gives a photo
                }
            values = {
                "detected_type": "image/jpeg",
                "bytes": 3_400_000 + n,
                "width": width,
                "height": height,
                "variants": variants,
                "blur_data_url": blur_data_url(blur_source(n), 16),
                "exif": {  # the shape imaging.extract_exif gives a phone photo
                    "make": "Apple",
                    "model": "iPhone 15 Pro",
                    "lens": "Apple iPhone 15 Pro back triple camera 6.765mm f/1.78",
                    "iso": 80,
                    "aperture": 1.78,
                    "exposureTime": 0.008,
                    "exposure": "1/125",
                    "focalLength": 6.77,
                    "focalLength35mm": 24,
                    "takenAt": f"2026-11-{1 + n % 28:02d}T10:{n % 60:02d}:00+01:00",
                },
                "gps": {"latitude": 48.8566 + n / 1e4, "longitude": 2.3522, "altitude": 35.2},
                "sha256": hashlib.sha256(media_id.bytes).hexdigest(),
                "duplicate_of": None,
                "review": None,
            }
            async with media.transaction() as conn:
                done = await media.finish_processing(
                    media_id, status=MediaStatus.READY, values=values, conn=conn
                )
            if done is None or done.status is not MediaStatus.READY:
                raise RuntimeError(f"media {media_id} did not become ready")
            ids.append(media_id)
    finally:
        await pool.close()
        await stores.close()
    return ids, len(sizes)


def purposes(count: int) -> list[str]:
    """One profile, one cover, the rest gallery."""
    return ["profile", "cover", *["gallery"] * (count - 2)][:count]


def check_public(body: dict[str, Any], ids: list[uuid.UUID], variants: int) -> None:
    """Raise unless ``body`` shows every item of ``ids``, in order, with a srcset of
    ``variants`` widths, and a profile image and a cover."""
    shown = [item["id"] for item in body["items"]]
    if shown != [str(i) for i in ids]:
        raise RuntimeError(f"the public read shows {len(shown)} items, not the {len(ids)} put")
    for item in body["items"]:
        if len(item["srcset"].split(", ")) != variants or not item["blurDataURL"]:
            raise RuntimeError(f"an item without its {variants} variants: {item}")
    if body.get("profileImage") is None or body.get("cover") is None:
        raise RuntimeError("no profileImage or cover in the public read")


# -- the load ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One request: ``due`` is the ``time.perf_counter()`` it was scheduled for; ``lag_ms``
    how late it went out; ``latency_ms`` from ``due`` to its whole response (or the error);
    ``status`` 0 for a transport error, -1 when it was not sent (``MAX_INFLIGHT`` were
    waiting already); ``sent_etag`` the If-None-Match it carried; ``size`` the bytes of its
    body; ``error`` the transport error's class."""

    index: int
    due: float
    lag_ms: float
    latency_ms: float
    status: int
    etag: str | None
    sent_etag: str | None
    size: int
    error: str | None = None


@dataclass(frozen=True)
class Phase:
    """The samples of one phase, the seconds from its first scheduled request to its last
    answer, and the CPU seconds this generator, the server process and the Postgres
    backends of the bench's database spent meanwhile."""

    samples: list[Sample]
    elapsed: float
    cpu: float
    server_cpu: float
    postgres_cpu: float


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used, from /proc; 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rpartition(")")[2].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Meter:
    """CPU seconds of the server process (``server``, a pid) and of the Postgres backends
    connected to database ``dbname`` (found through ``admin``, a connection to another
    database; Postgres must run on this machine, as the bench's does)."""

    def __init__(self, server: int, admin: psycopg.Connection[Any], dbname: str) -> None:
        self.server = server
        self._admin = admin
        self._dbname = dbname

    def read(self) -> tuple[float, dict[int, float]]:
        """The server's CPU seconds and each backend's, now."""
        rows = self._admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s", (self._dbname,)
        ).fetchall()
        return process_cpu(self.server), {row[0]: process_cpu(row[0]) for row in rows}

    def since(self, before: tuple[float, dict[int, float]]) -> tuple[float, float]:
        """The server's and the backends' CPU seconds since ``before`` (a ``read()``); a
        backend that ended meanwhile is not counted."""
        server, backends = self.read()
        return server - before[0], sum(
            cpu - before[1].get(pid, 0.0) for pid, cpu in backends.items()
        )


async def drive(
    meter: Meter,
    session: aiohttp.ClientSession,
    path: str,
    rate: float,
    seconds: float,
    etag_for: Callable[[int], str | None] = lambda _: None,
    observe: Callable[[Sample], None] = lambda _: None,
) -> Phase:
    """Send ``rate * seconds`` GETs of ``path`` on a fixed schedule (``meter`` measures the
    server's and Postgres's CPU meanwhile) through ``session``; ``etag_for(i)`` is request
    ``i``'s If-None-Match (None: none);
    ``observe`` sees each sample as it lands. A request due while ``MAX_INFLIGHT`` are
    unanswered is not sent (a sample with status -1): past that the server is saturated
    anyway, and an unbounded backlog would make this generator, not the server, the
    bottleneck. Returns the phase when the last answer has landed."""
    samples: list[Sample] = []
    inflight: set[asyncio.Task[None]] = set()
    cpu, before = time.process_time(), meter.read()
    start = time.perf_counter() + 0.01

    async def one(i: int, due: float) -> None:
        sent_etag = etag_for(i)
        headers = {"If-None-Match": sent_etag} if sent_etag else {}
        lag = time.perf_counter() - due
        try:
            async with session.get(path, headers=headers) as response:
                body = await response.read()
            status, etag, size = response.status, response.headers.get("etag"), len(body)
            error = None
        except (aiohttp.ClientError, TimeoutError) as exc:
            status, etag, size, error = 0, None, 0, type(exc).__name__
        latency = (time.perf_counter() - due) * 1000
        sample = Sample(i, due, lag * 1000, latency, status, etag, sent_etag, size, error)
        samples.append(sample)
        observe(sample)

    for i in range(int(rate * seconds)):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if len(inflight) >= MAX_INFLIGHT:
            samples.append(Sample(i, due, 0.0, 0.0, -1, None, None, 0))
            continue
        task = asyncio.create_task(one(i, due))
        inflight.add(task)
        task.add_done_callback(inflight.discard)
    await asyncio.gather(*list(inflight))
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    return Phase(samples, elapsed, cpu, *meter.since(before))


def summary(phase: Phase, ok: set[int]) -> dict[str, Any]:
    """Latency percentiles (ms) of every answer, the achieved rate (answers per second) and
    the errors (answers whose status is not in ``ok``, transport errors and requests not
    sent included), what the generator cost (how late it sent, p99, and its CPU per
    request) and the CPU per answer of the server and of Postgres."""
    samples = [s for s in phase.samples if s.status != -1]
    latencies = [s.latency_ms for s in samples] or [float("nan")]
    return {
        "requests": len(phase.samples),
        "not_sent": len(phase.samples) - len(samples),
        "achieved_rate": round(len(samples) / phase.elapsed, 1),
        "p50_ms": round(percentile(latencies, 0.50), 2),
        "p90_ms": round(percentile(latencies, 0.90), 2),
        "p99_ms": round(percentile(latencies, 0.99), 2),
        "max_ms": round(max(latencies), 2),
        "errors": sum(1 for s in phase.samples if s.status not in ok),
        "statuses": {str(k): v for k, v in sorted(Counter(s.status for s in samples).items())},
        "transport_errors": dict(Counter(s.error for s in samples if s.error)),
        "gen_lag_p99_ms": round(percentile([s.lag_ms for s in samples or phase.samples], 0.99), 2),
        "gen_cpu_ms_per_request": round(1000 * phase.cpu / max(1, len(samples)), 3),
        "server_cpu_ms_per_answer": round(1000 * phase.server_cpu / max(1, len(samples)), 3),
        "postgres_cpu_ms_per_answer": round(1000 * phase.postgres_cpu / max(1, len(samples)), 3),
    }


async def change_phase(
    meter: Meter,
    session: aiohttp.ClientSession,
    path: str,
    args: argparse.Namespace,
    etag: str,
    put: Callable[[], Any],
) -> dict[str, Any]:
    """The reads of ``--clients`` clients, each sending the ETag it last saw, with ``put()``
    (a change of the visible content) halfway through. Counts: ``revalidations_200``, the
    200s answering the old ETag (one per client, more when a client's next request went out
    before its 200 came back); ``clients_304_again``, the clients that then got 304 for the
    new ETag; ``new_etag_200``, 200s answering the new ETag (0: it is stable);
    ``stale_after_change``, requests due after the PUT answered that got the old content."""
    held = [etag] * args.clients
    moments: dict[str, float] = {}

    def observe(sample: Sample) -> None:
        if sample.status == 200 and sample.etag:
            held[sample.index % args.clients] = sample.etag

    async def change() -> None:
        await asyncio.sleep(args.change_seconds / 2)
        moments["sent"] = time.perf_counter()
        await put()
        moments["done"] = time.perf_counter()

    phase, _ = await asyncio.gather(
        drive(
            meter, session, path, args.rate, args.change_seconds,
            etag_for=lambda i: held[i % args.clients], observe=observe,
        ),
        change(),
    )  # fmt: skip
    samples = phase.samples
    answered = [s for s in samples if s.status in (200, 304)]
    # Stale: the PUT had answered before the request was due, yet the old content came back.
    stale = [
        s for s in answered if s.due >= moments["done"] and etag in (s.etag, s.sent_etag)
        and not (s.status == 200 and s.etag != etag)
    ]  # fmt: skip
    new_etags = sorted({s.etag for s in answered if s.status == 200 and s.etag != etag})
    revalidations = Counter(s.index % args.clients for s in answered
                            if s.status == 200 and s.sent_etag == etag)  # fmt: skip
    again = {s.index % args.clients for s in answered
             if s.status == 304 and s.sent_etag != etag}  # fmt: skip
    return {
        **summary(phase, {200, 304}),
        "clients": args.clients,
        "put_ms": round((moments["done"] - moments["sent"]) * 1000, 2),
        "etag_before": etag,
        "etag_after": new_etags[0] if len(new_etags) == 1 else new_etags or None,
        "before_304": sum(1 for s in answered if s.due < moments["sent"] and s.status == 304),
        "before_total": sum(1 for s in samples if s.due < moments["sent"]),
        "revalidations_200": sum(revalidations.values()),
        "clients_revalidated": len(revalidations),
        "clients_revalidated_once": sum(1 for n in revalidations.values() if n == 1),
        "clients_304_again": len(again),
        "new_etag_200": sum(1 for s in answered if s.status == 200 and s.sent_etag != etag),
        "stale_after_change": len(stale),
    }


async def capacity(
    meter: Meter,
    session: aiohttp.ClientSession,
    shards: int,
    path: str,
    seconds: float,
    etag: str | None = None,
) -> dict[str, Any]:
    """Closed loop: each of ``shards`` clients sends its next GET as soon as the last is answered,
    for ``seconds``. The answers per second are the most this server process gives (with
    this generator on the same machine), not a latency figure."""
    headers = {"If-None-Match": etag} if etag else {}
    statuses: Counter[int] = Counter()
    before = meter.read()
    start = time.perf_counter()
    stop = start + seconds

    async def loop() -> None:
        while time.perf_counter() < stop:
            async with session.get(path, headers=headers) as response:
                await response.read()
            statuses[response.status] += 1

    await asyncio.gather(*(loop() for _ in range(shards)))
    elapsed = time.perf_counter() - start
    answers = sum(statuses.values())
    server_cpu, postgres_cpu = meter.since(before)
    return {
        "per_s": round(answers / elapsed, 1),
        "server_cpu_ms_per_answer": round(1000 * server_cpu / max(1, answers), 3),
        "postgres_cpu_ms_per_answer": round(1000 * postgres_cpu / max(1, answers), 3),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
    }


async def run(
    args: argparse.Namespace, meter: Meter, base: str, token: str, ids: list[uuid.UUID]
) -> Any:
    """The phases against the server at ``base`` (``meter`` measures its CPU); returns the
    run's figures, then those of the plain, conditional and change phases."""
    path = "/public/entities/{}/{}".format(*ENTITY)
    owner_path = "/entities/{}/{}/media".format(*ENTITY)
    auth = {"Authorization": f"Bearer {token}"}
    # The load goes through aiohttp (on uvloop): httpx cost this generator 2.4-2.9 ms of CPU
    # per request on the bench machine, more than the server's answer, on the same 2 cores.
    # httpx stays for the few setup requests.
    async with contextlib.AsyncExitStack() as stack:
        session = await stack.enter_async_context(
            aiohttp.ClientSession(
                base_url=base,
                connector=aiohttp.TCPConnector(limit=MAX_INFLIGHT),
                timeout=aiohttp.ClientTimeout(total=30),
            )
        )
        client = await stack.enter_async_context(httpx.AsyncClient(base_url=base, timeout=30))
        items = [
            {"mediaId": str(i), "purpose": p} for i, p in zip(ids, purposes(len(ids)), strict=True)
        ]
        attached = await client.put(owner_path, json={"items": items}, headers=auth)
        if attached.status_code != 200:
            raise RuntimeError(f"PUT {owner_path}: {attached.status_code} {attached.text}")
        first = await client.get(path)
        if first.status_code != 200:
            raise RuntimeError(f"GET {path}: {first.status_code} {first.text[:300]}")
        check_public(first.json(), ids, args.variants)
        etag = first.headers["etag"]
        figures: dict[str, Any] = {
            "load_before": load_average(),
            "body_bytes": len(first.content),
            "cache_control": first.headers.get("cache-control"),
        }

        await drive(meter, session, path, args.rate, args.warmup)
        phase = await drive(meter, session, path, args.rate, args.seconds)
        plain = summary(phase, {200})
        # A 200 must carry the whole collection (the same length as the first answer).
        plain["errors"] += sum(
            1 for s in phase.samples if s.status == 200 and s.size != len(first.content)
        )

        await drive(meter, session, path, args.rate, args.warmup, etag_for=lambda _: etag)
        phase = await drive(meter, session, path, args.rate, args.seconds, lambda _: etag)
        conditional = summary(phase, {304})
        answered = [s for s in phase.samples if s.status > 0]  # sent and answered
        not_modified = [s.latency_ms for s in answered if s.status == 304]
        conditional["rate_304"] = round(len(not_modified) / max(1, len(answered)), 4)
        conditional["p99_304_ms"] = (
            round(percentile(not_modified, 0.99), 2) if not_modified else None
        )

        async def reorder() -> None:
            response = await client.put(owner_path, json={"items": items[::-1]}, headers=auth)
            if response.status_code != 200:
                raise RuntimeError(f"PUT {owner_path}: {response.status_code} {response.text}")

        change = await change_phase(meter, session, path, args, etag, reorder)
        last = await client.get(path)
        check_public(last.json(), ids[::-1], args.variants)
        if args.capacity_seconds > 0:
            shards = args.shards
            figures["capacity"] = await capacity(
                meter, session, shards, path, args.capacity_seconds
            )
            figures["capacity_304"] = await capacity(
                meter, session, shards, path, args.capacity_seconds, last.headers["etag"]
            )
    return figures, plain, conditional, change


# -- the run -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def load_average() -> str:
    """The 1, 5 and 15 minute load averages: how busy the machine was besides this run."""
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def print_profile(path: str) -> None:
    stats = pstats.Stats(path, stream=sys.stderr)
    stats.strip_dirs().sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(40)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=500.0, help="requests per second")
    parser.add_argument("--seconds", type=float, default=20.0, help="per measured phase")
    parser.add_argument("--warmup", type=float, default=3.0, help="before each phase, excluded")
    parser.add_argument("--items", type=int, default=50, help="photos in the collection")
    parser.add_argument("--change-seconds", type=float, default=6.0)
    parser.add_argument(
        "--clients",
        type=int,
        help="clients of the change phase (default: each sends about 10 requests after the "
        "change, rate * change-seconds / 20)",
    )
    parser.add_argument(
        "--shards", type=int, default=16, help="clients of the closed-loop capacity run"
    )
    parser.add_argument(
        "--capacity-seconds",
        type=float,
        default=5.0,
        help="then a closed loop of --shards clients, plain and 304, for the most the server "
        "serves (0: skip)",
    )
    parser.add_argument("--database-url", default=DEFAULT_DSN, help="an admin connection")
    parser.add_argument(
        "--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    parser.add_argument("--profile", metavar="FILE", help="run the server under cProfile")
    parser.add_argument("--no-record", action="store_true", help="do not append to docs/")
    args = parser.parse_args()
    if args.items < 2:
        parser.error("--items: at least 2 (a profile and a cover)")
    if args.clients is None:
        args.clients = max(1, round(args.rate * args.change_seconds / 20))

    from mediajobs.db.migrate import migrate
    from mediajobs.service.auth import Authenticator

    port = free_port()
    serve_env = {"MEDIAJOBS_ENV": "test", "MEDIAJOBS_JWT_SECRET": SECRET,
                 "MEDIAJOBS_PORT": str(port)}  # fmt: skip
    name, dsn = fresh_database(args.database_url, "public")
    api = None
    try:
        asyncio.run(migrate(dsn))
        ids, args.variants = asyncio.run(seed(dsn, serve_env, args.items))
        command = None
        if args.profile:
            command = [sys.executable, "-m", "cProfile", "-o", args.profile,
                       "-m", "mediajobs", "serve"]  # fmt: skip
        api = start_serve(dsn, args.redis_url, port, SECRET, command=command)
        token = Authenticator(SECRET).issue_token(OWNER, ttl=3600)
        with psycopg.connect(args.database_url, autocommit=True) as admin:
            meter = Meter(api.pid, admin, name)
            figures, plain, conditional, change = uvloop.run(
                run(args, meter, f"http://127.0.0.1:{port}", token, ids)
            )
    finally:
        if api is not None:
            api.send_signal(signal.SIGTERM)
            api.wait(timeout=60)
        drop_database(args.database_url, name)
    if args.profile:
        print_profile(args.profile)

    table, result = report(args, figures, plain, conditional, change)
    print(table)
    if not args.no_record and not args.profile:
        record(
            f"Public reads: a {args.items}-item collection against one API process",
            table,
            "python bench/public_reads.py " + " ".join(sys.argv[1:]),
        )
    print(json.dumps(result))
    return 0


def report(
    args: argparse.Namespace,
    figures: dict[str, Any],
    plain: dict[str, Any],
    conditional: dict[str, Any],
    change: dict[str, Any],
) -> tuple[str, dict[str, Any]]:
    """The markdown table and notes of a run, and its figures for the JSON line."""
    met = all(
        phase["p99_ms"] <= TARGET_P99_MS
        and phase["errors"] == 0
        and phase["achieved_rate"] >= 0.99 * args.rate
        for phase in (plain, conditional)
    )
    revalidation_ok = (
        conditional["rate_304"] == 1.0
        and change["errors"] == 0
        and change["stale_after_change"] == 0
        and change["new_etag_200"] == 0
        and change["clients_304_again"] == args.clients
    )
    rows = [
        "| phase | requests | answers/s | p50 ms | p90 ms | p99 ms | max ms | errors "
        "| not sent | statuses | server CPU ms/answer | Postgres CPU ms/answer "
        "| generator lag p99 ms | generator CPU ms/request |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for label, phase in (("plain", plain), ("If-None-Match", conditional), ("change", change)):
        rows.append(
            f"| {label} | {phase['requests']} | {phase['achieved_rate']:g} | {phase['p50_ms']} "
            f"| {phase['p90_ms']} | {phase['p99_ms']} | {phase['max_ms']} | {phase['errors']} "
            f"| {phase['not_sent']} | {phase['statuses']}{phase['transport_errors'] or ''} "
            f"| {phase['server_cpu_ms_per_answer']} | {phase['postgres_cpu_ms_per_answer']} "
            f"| {phase['gen_lag_p99_ms']} "
            f"| {phase['gen_cpu_ms_per_request']} |"
        )
    notes = [
        f"Offered load: {args.rate:g} requests/s, {args.seconds:g} s per phase after "
        f"{args.warmup:g} s of warm-up; a collection of {args.items} photos "
        f"({figures['body_bytes']} bytes of JSON, `Cache-Control: {figures['cache_control']}`). "
        f"Load average before the run: {figures['load_before']}.",
        "",
        *rows,
        "",
        f"304 rate with `If-None-Match`: {conditional['rate_304']:.2%} (p99 of the 304s "
        f"{conditional['p99_304_ms']} ms). Change phase: {change['clients']} clients, each "
        f"sending the ETag it last saw; halfway, a reorder (PUT, {change['put_ms']} ms) moved "
        f"the ETag from `{change['etag_before']}` to `{change['etag_after']}`. Before it "
        f"{change['before_304']} of {change['before_total']} answers were 304; "
        f"{change['clients_revalidated']} clients revalidated to 200 "
        f"({change['clients_revalidated_once']} exactly once, {change['revalidations_200']} "
        f"200s in all), {change['clients_304_again']} then got 304 again for the new ETag; "
        f"200s for the new ETag: {change['new_etag_200']}; stale answers after the PUT "
        f"answered: {change['stale_after_change']}.",
    ]
    if "capacity" in figures:
        notes += [
            "",
            f"Capacity (closed loop, {args.shards} clients, {args.capacity_seconds:g} s each): "
            f"{figures['capacity']['per_s']} answers/s plain {figures['capacity']['statuses']} "
            f"({figures['capacity']['server_cpu_ms_per_answer']} ms of server CPU and "
            f"{figures['capacity']['postgres_cpu_ms_per_answer']} ms of Postgres CPU each), "
            f"{figures['capacity_304']['per_s']} with `If-None-Match` "
            f"{figures['capacity_304']['statuses']} "
            f"({figures['capacity_304']['server_cpu_ms_per_answer']} and "
            f"{figures['capacity_304']['postgres_cpu_ms_per_answer']} ms).",
        ]
    notes += [
        "",
        f"Target p99 <= {TARGET_P99_MS:g} ms at {args.rate:g} requests/s: "
        f"{'met' if met else 'missed'}.",
    ]
    result: dict[str, Any] = {
        "rate": args.rate,
        "seconds": args.seconds,
        "items": args.items,
        "body_bytes": figures["body_bytes"],
        "load_before": figures["load_before"],
        **{key: value for key, value in plain.items() if key != "statuses"},
        **{
            f"cond_{key}": value
            for key, value in conditional.items()
            if key not in ("statuses", "rate_304", "p99_304_ms")
        },
        "rate_304": conditional["rate_304"],
        "p99_304_ms": conditional["p99_304_ms"],
        **{f"change_{key}": value for key, value in change.items() if key != "statuses"},
        "capacity_per_s": figures.get("capacity", {}).get("per_s"),
        "capacity_304_per_s": figures.get("capacity_304", {}).get("per_s"),
        "revalidation_ok": revalidation_ok,
        "targets_met": met,
    }
    return "\n".join(notes), result


if __name__ == "__main__":
    sys.exit(main())
