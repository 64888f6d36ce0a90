"""Image understanding's plumbing: images per second through ``media.embed`` (a worker
claiming the jobs from Postgres, the variants read from the store, decoded, hashed, tagged,
embedded with the tiny CLIP model, and written back with their vectors into pgvector)
against the floor: the same variants decoded and preprocessed for the model, alone, in one
thread (no queue, no store, no hash, no tags, no model, no database).

    python bench/embed.py [--images 1024] [--per-job 32] [--repeats 3] [--no-record]

Setup: the embedded Postgres of ``mediajobs dev`` (pgserver, which ships pgvector), a fresh
database with the migrations; ``--images`` ready photos of one owner, each with a 320 x 240
WebP thumbnail (distinct photo-like pictures, quality 80, as the variant pipeline makes them)
in the in-process memory store; the tiny CLIP model (``mediajobs.vision.testing``, 512
dimensions, 224-pixel input: a real model's input and output shapes, with almost no
compute, so what is measured is everything around the model).

``ours``: the ``media.embed`` jobs are enqueued as bulk ingest enqueues them (``--per-job``
items each, the ingest batch size) and one in-process worker (the production options:
``media.embed`` one at a time) runs them to the end: images / wall seconds from the first
enqueue to the last job done. ``floor``: decode and preprocess the same bytes in a loop.
Each figure is the best of ``--repeats`` (fresh jobs each time; the vectors are upserted).
Target (issue 17): ``ratio_vs_floor_throughput`` (ours over the floor) >= 0.8. Ends with
one JSON line of figures.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import report_figures

OWNER = "bench"


def thumbnails(count: int) -> list[bytes]:
    """``count`` distinct 320 x 240 photo-like WebP thumbnails (gradients, shapes, noise)."""
    rng = np.random.default_rng(3)
    y, x = np.mgrid[0:240, 0:320].astype(np.float32)
    out = []
    for _ in range(count):
        a, b, c = rng.uniform(0.005, 0.05, 3)
        base = np.stack(
            [
                128 + 100 * np.sin(a * x + rng.uniform(0, 6)),
                128 + 100 * np.cos(b * y + rng.uniform(0, 6)),
                128 + 100 * np.sin(c * (x + y)),
            ],
            axis=-1,
        )
        base += rng.normal(0, 12, base.shape)
        image = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
        buffer = io.BytesIO()
        image.save(buffer, "WEBP", quality=80, method=4)
        out.append(buffer.getvalue())
    return out


def floor(data: list[bytes], model: Any) -> float:
    """Images per second: decode and preprocess, one thread, in batches like the handler."""
    from mediajobs.handlers.understand import decode_variant

    started = time.perf_counter()
    batch: list[np.ndarray] = []
    for blob in data:
        batch.append(model.preprocess(decode_variant(blob, model.info.image_size)))
        if len(batch) == 32:
            np.stack(batch)
            batch = []
    return len(data) / (time.perf_counter() - started)


async def ours(
    dsn: str, data: list[bytes], model_dir: Path, per_job: int
) -> tuple[float, dict[str, float]]:
    """Images per second through media.embed jobs run by one in-process worker, and the
    jobs' own account of their time per image (``ms`` of their results: reading variants,
    the CPU part with its wait for the model, the transaction)."""
    from mediajobs.config import Settings
    from mediajobs.db import open_pool
    from mediajobs.handlers.imaging_pool import ImagingPool, PoolOptions
    from mediajobs.handlers.understand import enqueue_understanding
    from mediajobs.handlers.wiring import WorkerResources, understand_handler
    from mediajobs.queue import HandlerRegistry, JobQueue, Worker, WorkerOptions
    from mediajobs.queue.kinds import MEDIA_EMBED
    from mediajobs.realtime import EventRecorder
    from mediajobs.storage import MemoryStore, StoreRegistry

    settings = Settings(clip_model_dirs=(model_dir,))
    store = MemoryStore("http://127.0.0.1:1/storage", secret=b"bench-embed-secret-0123456789abcdef")
    stores = StoreRegistry(store)
    ids = [uuid.uuid4() for _ in data]
    for media_id, blob in zip(ids, data, strict=True):
        await store.upload(f"media/{OWNER}/variants/{media_id}/thumb.webp", blob, "image/webp")
    pool = await open_pool(dsn, name="bench-embed", min_size=1, max_size=8)
    try:
        async with pool.connection() as conn:
            await conn.execute(
                """
                INSERT INTO media (id, owner_id, status, source_locator, width, height, variants)
                SELECT id, %(owner)s, 'ready', 'memory://memory/' || id, 320, 240,
                       jsonb_build_object('thumb', jsonb_build_object(
                           'locator', 'memory://memory/media/' || %(owner)s || '/variants/'
                                      || id || '/thumb.webp',
                           'width', 320, 'height', 240, 'bytes', 9000))
                FROM unnest(%(ids)s::uuid[]) AS id
                ON CONFLICT (id) DO NOTHING
                """,
                {"ids": ids, "owner": OWNER},
            )
        registry = HandlerRegistry()
        imaging = ImagingPool(PoolOptions(processes=1))  # unused by media.embed
        resources = WorkerResources(settings, pool, stores, imaging, None, EventRecorder(None))  # type: ignore[arg-type]
        handler = understand_handler(resources)
        registry.register(MEDIA_EMBED, handler)
        queue = JobQueue(pool)
        await handler._models()  # load the model before the clock starts, as a worker would have
        worker = Worker.for_postgres(
            queue, registry, conninfo=dsn,
            options=WorkerOptions.from_settings(settings, burst=False),
        )  # fmt: skip
        task = asyncio.create_task(worker.run())
        await asyncio.wait_for(worker.notifier.connected.wait(), timeout=10)
        started = time.perf_counter()
        async with pool.connection() as conn, conn.transaction():
            for start in range(0, len(ids), per_job):
                await enqueue_understanding(queue, conn, OWNER, ids[start : start + per_job])
        while True:
            counts = await queue.counts()
            if not any(counts.get(s, 0) for s in _OPEN):
                break
            await asyncio.sleep(0.02)
        elapsed = time.perf_counter() - started
        worker.stop()
        await asyncio.wait_for(task, timeout=30)
        imaging.close()
        async with pool.connection() as conn:
            failed = await (
                await conn.execute("SELECT count(*) AS n FROM jobs WHERE state = 'failed'")
            ).fetchone()
            spans = await (
                await conn.execute(
                    "SELECT sum(extract(epoch FROM finished_at - started_at)) AS busy, "
                    "extract(epoch FROM max(finished_at) - min(started_at)) AS span, "
                    "count(*) AS jobs, sum((result->'ms'->>'download')::float) AS download, "
                    "sum((result->'ms'->>'compute')::float) AS compute, "
                    "sum((result->'ms'->>'write')::float) AS write "
                    "FROM jobs WHERE kind = 'media.embed'"
                )
            ).fetchone()
            assert spans is not None
            understood = await (
                await conn.execute(
                    "SELECT count(*) AS n FROM media WHERE understood_at IS NOT NULL"
                )
            ).fetchone()
        if failed is None or failed["n"]:
            raise RuntimeError("a media.embed job failed")
        assert understood is not None
        assert understood["n"] == len(ids)
        per_image = {
            phase: round(float(spans[phase] or 0) / len(ids), 2)
            for phase in ("download", "compute", "write")
        }
        return len(ids) / elapsed, per_image
    finally:
        await pool.close()


_OPEN: tuple[Any, ...] = ()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    import pgserver

    from mediajobs.db.migrate import migrate
    from mediajobs.queue.models import JobState
    from mediajobs.vision.model import load_clip_model
    from mediajobs.vision.tags import load_vocabulary
    from mediajobs.vision.testing import write_tiny_clip

    global _OPEN
    _OPEN = (JobState.QUEUED, JobState.RUNNING)
    work = Path(tempfile.mkdtemp(prefix="mj-bench-embed-"))
    model_dir = write_tiny_clip(
        work / "tiny-clip-512", embed_dim=512, spectrum=1.0, words=load_vocabulary()
    )
    model = load_clip_model(model_dir)
    data = thumbnails(args.images)
    server = pgserver.get_server(work / "pg", cleanup_mode="delete")
    try:
        admin = server.get_uri()
        floors, mine = [], []
        for attempt in range(args.repeats):
            name = f"bench_embed_{attempt}"
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f"CREATE DATABASE {name}")
            dsn = admin.replace("/postgres?", f"/{name}?")
            await migrate(dsn)
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            floors.append(floor(data, model))
            rate, phases = await ours(dsn, data, model_dir, args.per_job)
            mine.append(rate)
            print(
                f"run {attempt + 1}: ours {mine[-1]:.0f}/s, floor {floors[-1]:.0f}/s",
                file=sys.stderr,
            )
    finally:
        server.cleanup()
    best_ours, best_floor = max(mine), max(floors)
    return {
        "images": args.images,
        "per_job": args.per_job,
        "repeats": args.repeats,
        "ours_images_per_s": round(best_ours, 1),
        "floor_images_per_s": round(best_floor, 1),
        "ratio_vs_floor_throughput": round(best_ours / best_floor, 3),
        "runs_ours": [round(x, 1) for x in mine],
        "runs_floor": [round(x, 1) for x in floors],
        "job_ms_per_image": phases,
        "targets_met": best_ours / best_floor >= 0.8,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--per-job", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    figures = asyncio.run(run(args))
    report_figures(
        "Image understanding throughput (media.embed)",
        figures,
        "bench/embed.py",
        keep=not args.no_record,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
