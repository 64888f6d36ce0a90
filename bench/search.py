"""Semantic search at 200k images: pgvector's HNSW index over 512-dimensional unit vectors,
its build time, recall@10 against exact search, and query latency through
``GET /media/search`` (one ``mediajobs serve`` process) against the same query in raw SQL.

    python bench/search.py [--vectors 200000] [--dims 512] [--queries 300] [--warmup 30]
                           [--no-record]

Setup: the embedded Postgres of ``mediajobs dev`` (pgserver, which ships pgvector) with
``shared_buffers`` large enough for the table and its HNSW index (``--shared-buffers``), a
fresh database with the migrations; ``--vectors`` ready photos of one owner (each with two
variants, as the API renders them) and a random unit vector each, written by binary COPY
into a ``building`` embedding index; then its HNSW index is built (timed) and it is swapped
in, as ``mediajobs models reindex`` does. The model is the tests' tiny CLIP model at
``--dims`` dimensions (``mediajobs.vision.testing``): the API embeds each query's text with
it, exactly as with a real model. The vectors, and the model's outputs, are random unit
vectors whose variance falls as ``i ** -spectrum`` over the dimensions (default 1): real
embeddings concentrate their variance in few directions, and isotropic random vectors
(``--spectrum 0``), where every point is about as far from every other, are the known worst
case of approximate nearest-neighbour search (recall@10 0.37 at ``ef_search`` 100 over 20k
of them, against 0.996 with a spectrum of 1).

Queries are distinct texts ("photo 17 of a red car", ...), each asked once (no cache hit).
Their vectors are computed here with the same model, and:

- ``sql``: the query the API runs (``db.vectors_sql.SEARCH``: the HNSW walk, the owner and
  review-gate filter, the media rows) through psycopg on one connection, with the same
  ``hnsw.ef_search``; and the bare ``ORDER BY embedding <=> q LIMIT 10`` (``sql_bare``).
- ``api``: ``GET /media/search?q=...&limit=10`` with a bearer token, one request at a time
  over a kept-alive connection: text embedding, the search, ten items rendered with their
  variant URLs.
- recall@10: the API's ten ids against the exact ten (numpy: the dot products of all
  vectors), for the text queries; and for random unit queries through the SQL (a harder
  case: random directions, far from any text).

Targets (issue 17): recall@10 >= 0.95, API p99 <= 25 ms, ``ratio_vs_sql_latency`` (API p50
over SQL p50) <= 1.3. Ends with one JSON line of figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import struct
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import percentile, report_figures, start_serve

OWNER = "bench"
SECRET = "bench-search-secret-" + "x" * 32
WORDS = (
    "red",
    "car",
    "dog",
    "beach",
    "mountain",
    "city",
    "night",
    "snow",
    "cat",
    "bird",
    "flower",
    "forest",
    "river",
    "boat",
    "bridge",
    "tower",
    "market",
    "street",
    "garden",
    "kitchen",
    "portrait",
    "crowd",
    "sunset",
    "train",
    "bicycle",
)


def copy_header() -> bytes:
    return b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)


def media_rows(ids: list[uuid.UUID]) -> bytes:
    """COPY BINARY rows of (id, owner_id, status, source_locator, original_filename, width,
    height, variants) for ready photos."""
    out = bytearray(copy_header())
    for n, media_id in enumerate(ids):
        fields = [
            media_id.bytes,
            OWNER.encode(),
            b"ready",
            f"memory://memory/media/{OWNER}/uploads/{media_id}/IMG_{n}.jpg".encode(),
            f"IMG_{n}.jpg".encode(),
            struct.pack("!i", 4032),
            struct.pack("!i", 3024),
            b"\x01"
            + json.dumps(
                {
                    name: {
                        "locator": f"memory://memory/media/{OWNER}/variants/{media_id}/{name}.webp",
                        "width": w,
                        "height": w * 3 // 4,
                        "bytes": w * w // 16,
                    }
                    for name, w in (("thumb", 320), ("card", 640))
                }
            ).encode(),
        ]
        out += struct.pack("!h", len(fields))
        for value in fields:
            out += struct.pack("!i", len(value)) + value
    out += struct.pack("!h", -1)
    return bytes(out)


def vector_rows(ids: list[uuid.UUID], vectors: np.ndarray, model: str) -> bytes:
    """COPY BINARY rows of (media_id, owner_id, model, embedding) in pgvector's binary form
    (int16 dimensions, int16 unused, float4 big-endian each)."""
    dims = vectors.shape[1]
    head = struct.pack("!hh", dims, 0)
    big = vectors.astype(">f4")
    out = bytearray(copy_header())
    owner, name = OWNER.encode(), model.encode()
    for media_id, vector in zip(ids, big, strict=True):
        value = head + vector.tobytes()
        out += struct.pack("!h", 4)
        for field in (media_id.bytes, owner, name, value):
            out += struct.pack("!i", len(field)) + field
    out += struct.pack("!h", -1)
    return bytes(out)


def unit(rng: np.random.Generator, rows: int, dims: int, spectrum: float = 0.0) -> np.ndarray:
    """Random unit vectors: Gaussian with the variance of dimension i falling as
    ``i ** -spectrum`` (0: isotropic), normalised."""
    scale = (np.arange(1, dims + 1, dtype=np.float32) ** (-spectrum / 2)).astype(np.float32)
    v = rng.standard_normal((rows, dims)).astype(np.float32) * scale
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def exact_top(vectors: np.ndarray, queries: np.ndarray, k: int = 10) -> np.ndarray:
    scores = queries @ vectors.T
    return np.argpartition(-scores, k, axis=1)[:, :k]


async def seed(
    dsn: str, count: int, dims: int, model: str, spectrum: float
) -> tuple[Any, list[uuid.UUID], np.ndarray, float]:
    from mediajobs.db import open_pool
    from mediajobs.db.vectors import EmbeddingIndexes

    rng = np.random.default_rng(17)
    ids = [uuid.UUID(int=int(rng.integers(1, 2**62)) << 64 | n) for n in range(count)]
    vectors = unit(rng, count, dims, spectrum)
    pool = await open_pool(dsn, name="bench-search", min_size=1, max_size=2)
    indexes = EmbeddingIndexes(pool)
    building = await indexes.start_building(model, dims)
    async with pool.connection() as conn:
        async with conn.cursor().copy(
            "COPY media (id, owner_id, status, source_locator, original_filename, width, "
            "height, variants) FROM STDIN (FORMAT BINARY)"
        ) as copy:
            await copy.write(media_rows(ids))
        async with conn.cursor().copy(
            f"COPY {building.table} (media_id, owner_id, model, embedding) "
            "FROM STDIN (FORMAT BINARY)"
        ) as copy:
            await copy.write(vector_rows(ids, vectors, model))
        await conn.execute("ANALYZE media")
        await conn.execute(f"ANALYZE {building.table}")
        await conn.execute("SET maintenance_work_mem = '1GB'")
    started = time.perf_counter()
    async with pool.connection() as conn:
        await conn.execute("SET maintenance_work_mem = '1GB'")
        await conn.execute(
            building.statement(
                "CREATE INDEX {hnsw_idx} ON {table} USING hnsw (embedding vector_cosine_ops)"
            )
        )
    build_s = time.perf_counter() - started
    await indexes.activate(building)
    return pool, ids, vectors, build_s


def text_queries(count: int, words: list[str]) -> list[str]:
    """``count`` distinct queries of three words of the vocabulary ("dog beach sunset")."""
    rng = np.random.default_rng(5)
    found: dict[str, None] = {}
    while len(found) < count:
        picked = rng.choice(len(words), size=3, replace=False)
        found.setdefault(" ".join(words[int(i)] for i in picked))
    return list(found)


async def sql_latencies(
    dsn: str, table: str, queries: np.ndarray, ef_search: int, warmup: int
) -> tuple[list[float], list[float], list[list[uuid.UUID]]]:
    from mediajobs.db import vectors_sql
    from mediajobs.db.vectors import VectorParam

    full = vectors_sql.SEARCH.replace("{table}", table)
    bare = f"SELECT media_id FROM {table} ORDER BY embedding <=> %s::vector LIMIT 10"
    times, bare_times, found = [], [], []
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute("SELECT set_config('hnsw.ef_search', %s, false)", (str(ef_search),))
        for n, query in enumerate(queries):
            literal = VectorParam(query)  # the API's own parameter: pgvector's binary form
            params = {
                "query": literal,
                "owner": OWNER,
                "window": ef_search,
                "limit": 10,
                "offset": 0,
                "exclude": [],
            }
            started = time.perf_counter()
            rows = await (await conn.execute(full, params)).fetchall()
            elapsed = time.perf_counter() - started
            started = time.perf_counter()
            await (await conn.execute(bare, (literal,))).fetchall()
            bare_elapsed = time.perf_counter() - started
            if n >= warmup:
                times.append(elapsed * 1000)
                bare_times.append(bare_elapsed * 1000)
                found.append([row[0] for row in rows])
    return times, bare_times, found


class KeepAliveClient:
    """A minimal HTTP/1.1 GET client on one kept-alive connection (asyncio streams): a few
    microseconds per request, so the latency measured is the server's, not a client
    library's (httpx costs about 0.5 ms of CPU per request)."""

    def __init__(self, port: int, headers: dict[str, str]) -> None:
        self.port = port
        self.head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, target: str) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        request = f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n{self.head}\r\n"
        self.writer.write(request.encode())
        status_line = await self.reader.readline()
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "content-length":
                length = int(value)
        body = await self.reader.readexactly(length)
        return int(status_line.split()[1]), body

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            await self.writer.wait_closed()


async def api_latencies(
    port: int, texts: list[str], warmup: int
) -> tuple[list[float], list[list[uuid.UUID]], str]:
    from urllib.parse import urlencode

    from mediajobs.service.auth import Authenticator

    token = Authenticator(SECRET).issue_token(OWNER)
    times, found, mode = [], [], ""
    client = KeepAliveClient(port, {"Authorization": f"Bearer {token}"})
    try:
        for n, text in enumerate(texts):
            target = "/media/search?" + urlencode({"q": text, "limit": 10})
            started = time.perf_counter()
            status, raw = await client.get(target)
            elapsed = time.perf_counter() - started
            if status != 200:
                raise RuntimeError(f"GET /media/search answered {status}: {raw[:300]!r}")
            body = json.loads(raw)
            mode = body["mode"]
            if n >= warmup:
                times.append(elapsed * 1000)
                found.append([uuid.UUID(item["id"]) for item in body["items"]])
    finally:
        await client.close()
    return times, found, mode


def recall(found: list[list[uuid.UUID]], exact: np.ndarray, ids: list[uuid.UUID]) -> float:
    hits = total = 0
    for got, truth in zip(found, exact, strict=True):
        expected = {ids[i] for i in truth}
        hits += len(expected & set(got))
        total += len(expected)
    return hits / total


async def run(args: argparse.Namespace) -> dict[str, Any]:
    import pgserver

    from mediajobs.db.migrate import migrate
    from mediajobs.db.vectors import MIN_EF_SEARCH, EmbeddingIndexes
    from mediajobs.vision.model import load_clip_model
    from mediajobs.vision.tags import load_vocabulary
    from mediajobs.vision.testing import write_tiny_clip

    work = Path(tempfile.mkdtemp(prefix="mj-bench-search-"))
    model_dir = write_tiny_clip(
        work / "tiny-clip-512", embed_dim=args.dims, spectrum=args.spectrum,
        words=[*WORDS, "photo", "of", "a", "and", *load_vocabulary()],
    )  # fmt: skip
    model = load_clip_model(model_dir)
    # shared_buffers large enough for the table and its HNSW index, as a database serving
    # search would be configured (pgserver's default is 128 MB): set, then restart.
    server = pgserver.get_server(work / "pg", cleanup_mode="stop")
    with psycopg.connect(server.get_uri(), autocommit=True) as conn:
        conn.execute(f"ALTER SYSTEM SET shared_buffers = '{args.shared_buffers}'")
    server.cleanup()
    server = pgserver.get_server(work / "pg", cleanup_mode="delete")
    admin = server.get_uri()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("CREATE DATABASE bench_search")
    dsn = admin.replace("/postgres?", "/bench_search?")
    await migrate(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    print(f"seeding {args.vectors} vectors of {args.dims} dimensions ...", file=sys.stderr)
    seeded = time.perf_counter()
    pool, ids, vectors, build_s = await seed(
        dsn, args.vectors, args.dims, model.name, args.spectrum
    )
    print(
        f"seeded in {time.perf_counter() - seeded:.0f} s; HNSW built in {build_s:.1f} s",
        file=sys.stderr,
    )
    active = await EmbeddingIndexes(pool).active()
    assert active is not None
    await pool.close()

    total = args.queries + args.warmup
    vocabulary = sorted({w for concept in load_vocabulary() for w in concept.split()})
    texts = text_queries(total, vocabulary)
    text_vectors = model.encode_texts(texts)
    random_vectors = unit(np.random.default_rng(99), total, args.dims, args.spectrum)
    ef = MIN_EF_SEARCH
    sql_ms, bare_ms, sql_found = await sql_latencies(
        dsn, active.table, text_vectors, ef, args.warmup
    )
    _, _, random_found = await sql_latencies(dsn, active.table, random_vectors, ef, args.warmup)

    port = 18000 + os.getpid() % 1000
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    serve = start_serve(dsn, redis_url, port, SECRET, MEDIAJOBS_CLIP_MODEL_DIR=str(model_dir))
    try:
        api_ms, api_found, mode = await api_latencies(port, texts, args.warmup)
    finally:
        serve.terminate()
        serve.wait(30)
        server.cleanup()

    exact_text = exact_top(vectors, text_vectors[args.warmup :])
    exact_random = exact_top(vectors, random_vectors[args.warmup :])
    figures = {
        "vectors": args.vectors,
        "dims": args.dims,
        "spectrum": args.spectrum,
        "shared_buffers": args.shared_buffers,
        "queries": args.queries,
        "ef_search": ef,
        "mode": mode,
        "hnsw_build_s": round(build_s, 1),
        "recall_at_10": round(recall(api_found, exact_text, ids), 4),
        "recall_at_10_sql_text": round(recall(sql_found, exact_text, ids), 4),
        "recall_at_10_random_queries": round(recall(random_found, exact_random, ids), 4),
        "sql_p50_ms": round(percentile(sql_ms, 0.5), 2),
        "sql_p99_ms": round(percentile(sql_ms, 0.99), 2),
        "sql_bare_p50_ms": round(percentile(bare_ms, 0.5), 2),
        "sql_bare_p99_ms": round(percentile(bare_ms, 0.99), 2),
        "api_p50_ms": round(percentile(api_ms, 0.5), 2),
        "api_p99_ms": round(percentile(api_ms, 0.99), 2),
    }
    figures["ratio_vs_sql_latency"] = round(figures["api_p50_ms"] / figures["sql_p50_ms"], 3)
    figures["ratio_vs_sql_latency_p99"] = round(figures["api_p99_ms"] / figures["sql_p99_ms"], 3)
    figures["targets_met"] = (
        figures["recall_at_10"] >= 0.95
        and figures["api_p99_ms"] <= 25
        and figures["ratio_vs_sql_latency"] <= 1.3
    )
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vectors", type=int, default=200_000)
    parser.add_argument("--dims", type=int, default=512)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument(
        "--spectrum",
        type=float,
        default=1.0,
        help="the variance of dimension i falls as i ** -SPECTRUM (0: isotropic, default 1)",
    )
    parser.add_argument(
        "--shared-buffers", default="1536MB", help="Postgres's shared_buffers (default 1536MB)"
    )
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    figures = asyncio.run(run(args))
    report_figures(
        "Semantic search (pgvector HNSW)", figures, "bench/search.py", keep=not args.no_record
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
