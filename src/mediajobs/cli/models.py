"""``mediajobs models``: the CLIP model of image understanding. ``check`` loads the model
directory (``MEDIAJOBS_CLIP_MODEL_DIR`` or ``--model-dir``) and measures it on this
machine; without one it says that image understanding is off and exits 1."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn

from mediajobs.cli.common import Commands, bounded, print_json, with_pool
from mediajobs.config import Settings
from mediajobs.db.pool import Pool
from mediajobs.devenv import with_dev_secret
from mediajobs.errors import StorageError
from mediajobs.handlers.reindex import ReindexProgress, ReindexRefused, reindex
from mediajobs.storage.factory import stores_for
from mediajobs.types import JSON
from mediajobs.vision.catalog import ModelCatalog
from mediajobs.vision.model import ClipModel, ModelInvalid, load_clip_model
from mediajobs.vision.tags import load_vocabulary

# The images `models check` times: a library's thumbnails and previews are about this size
# (the media.embed handler embeds the smallest variant at least as large as the model's
# input; the default variant set has 320 and 640 pixel ones).
_CHECK_IMAGE = (640, 480)


def add_models(commands: Commands) -> None:
    """The ``models`` command's parser and its subcommands."""
    models = commands.add_parser(
        "models", help="check | reindex: the CLIP model of embeddings, tags and search"
    )
    models_commands = models.add_subparsers(dest="models_command", required=True)
    check = models_commands.add_parser(
        "check",
        help="load the CLIP model and print its name, dimension, providers and images/s",
        description="Load the CLIP model directory (MEDIAJOBS_CLIP_MODEL_DIR) as the "
        "workers and the API do, embed synthetic 640x480 images in batches for a few "
        "seconds, and print what it is and how fast it runs here. Exit 1 when no model is "
        "configured or it cannot be loaded.",
    )
    check.add_argument(
        "--model-dir",
        type=Path,
        help="a CLIP model directory to check instead of MEDIAJOBS_CLIP_MODEL_DIR",
    )
    check.add_argument(
        "--seconds",
        type=bounded(float, 0.1, 600.0),
        default=3.0,
        help="how long to measure images/s (default 3)",
    )
    check.add_argument("--json", action="store_true", help="print one JSON object")
    check.set_defaults(handler=cmd_models_check)
    add_reindex(models_commands)


def measure(model: ClipModel, seconds: float) -> dict[str, float]:
    """Images/s of preprocessing and inference together, in batches of the model's batch
    size, over synthetic noise images (decoding is not counted: it depends on the format);
    and the milliseconds of one uncached text query."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (_CHECK_IMAGE[1], _CHECK_IMAGE[0], 3), dtype=np.uint8)
    images = [Image.fromarray(pixels)] * model.info.batch_size
    model.encode_images(images[:1])  # the first run allocates; do not count it
    done, started = 0, time.perf_counter()
    while True:
        model.encode_images(images)
        done += len(images)
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            break
    text_started = time.perf_counter()
    model.encode_texts(["a photo of a dog on a beach."])
    text_ms = (time.perf_counter() - text_started) * 1000
    return {"imagesPerSecond": round(done / elapsed, 1), "textQueryMs": round(text_ms, 2)}


def cmd_models_check(args: argparse.Namespace, settings: Settings) -> int:
    """Load and measure each configured model (or ``--model-dir``); print their facts
    (``--json``: one object, ``models`` a list)."""
    if args.model_dir is not None and not str(args.model_dir).strip():
        print("mediajobs: --model-dir: give a directory", file=sys.stderr)
        return 2
    directories = [args.model_dir] if args.model_dir else list(settings.clip_model_dirs)
    if not directories:
        reason = (
            "no CLIP model is configured (MEDIAJOBS_CLIP_MODEL_DIR is unset): embeddings, "
            "CLIP tags and semantic search are off; colour and EXIF tags, perceptual "
            "duplicates and full-text search work without one"
        )
        if args.json:
            print_json({"enabled": False, "reason": reason})
        else:
            print(f"mediajobs: {reason}", file=sys.stderr)
        return 1
    reports: list[JSON] = []
    for directory in directories:
        try:
            model = load_clip_model(directory, batch_size=settings.clip_batch_size or None)
            vocabulary = load_vocabulary(settings.clip_vocabulary)
        except ModelInvalid as exc:
            if args.json:
                print_json({"enabled": False, "reason": str(exc), "code": exc.code})
            else:
                print(f"mediajobs: the CLIP model cannot be loaded: {exc}", file=sys.stderr)
            return 1
        figures = measure(model, args.seconds)
        reports.append({**model.info.as_json(), "vocabulary": len(vocabulary), **figures})
        if not args.json:
            _print_model(model, len(vocabulary), figures, first=len(reports) == 1)
    if args.json:
        print_json({"enabled": True, "models": reports})
    return 0


def _print_model(
    model: ClipModel, vocabulary: int, figures: dict[str, float], *, first: bool
) -> None:
    info = model.info
    if not first:
        print()
    print(f"model       {info.name} ({info.directory}){'' if first else ' (kept for a switch)'}")
    print(f"dimension   {info.embed_dim}")
    print(f"input       {info.image_size}x{info.image_size}, text of {info.context_length} tokens")
    print(f"providers   {', '.join(info.providers)}")
    print(f"batch size  {info.batch_size}")
    print(f"vocabulary  {vocabulary} concepts")
    print(
        f"speed       {figures['imagesPerSecond']:g} images/s "
        f"(640x480, preprocessing + inference), a text query in {figures['textQueryMs']:g} ms"
    )


def add_reindex(models_commands: Commands) -> None:
    reindex = models_commands.add_parser(
        "reindex",
        help="embed every ready image with a model and make its index the one search reads",
        description="Embed every ready image with MODEL (a model of MEDIAJOBS_CLIP_MODEL_DIR; "
        "default: the first) into an embedding index of its own, build its HNSW index, then "
        "swap it in: search keeps answering from the old index until then. Resumable: run "
        "it again and it goes on where it stopped. With the model already in use, it embeds "
        "the images the index lacks. Needs pgvector.",
    )
    reindex.add_argument("--model", help="the model's name (default: the first configured)")
    reindex.add_argument("--json", action="store_true", help="print one JSON object at the end")
    reindex.set_defaults(handler=cmd_models_reindex)


def cmd_models_reindex(args: argparse.Namespace, settings: Settings) -> int:
    """Run ``handlers.reindex.reindex``; a progress bar on a terminal, a summary (or one
    JSON object) at the end. Exit 1 when it cannot start."""
    if args.model is not None and not args.model.strip():
        print("mediajobs: --model: give a model's name", file=sys.stderr)
        return 2
    settings = with_dev_secret(settings)  # the development store's signing key derives from it
    catalog = ModelCatalog.from_settings(settings)
    if not catalog.enabled:
        print("mediajobs: no CLIP model is configured (MEDIAJOBS_CLIP_MODEL_DIR)", file=sys.stderr)
        return 1
    try:
        stores = stores_for(settings, remote_memory=True)
    except StorageError as exc:
        print(f"mediajobs: {exc}", file=sys.stderr)
        return 1
    console = Console(stderr=True)
    bar = (
        None
        if args.json or not console.is_terminal
        else Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[failed]}"),
            console=console,
        )
    )
    task: TaskID | None = None

    def show(progress: ReindexProgress) -> None:
        nonlocal task
        if bar is None:
            return
        failed = f"{progress.failed} failed" if progress.failed else ""
        if task is None:
            task = bar.add_task(progress.phase, total=progress.total, failed=failed)
        bar.update(
            task,
            description=progress.phase,
            completed=progress.done,
            total=max(progress.total, progress.done),
            failed=failed,
        )

    async def run(pool: Pool) -> ReindexProgress:
        try:
            return await reindex(pool, stores, catalog, args.model, on_progress=show)
        finally:
            await stores.close()

    try:
        if bar is not None:
            with bar:
                result = with_pool(settings, run)
        else:
            result = with_pool(settings, run)
    except ReindexRefused as exc:
        if args.json:
            print_json({"error": {"code": exc.code, "message": str(exc)}})
        else:
            print(f"mediajobs: {exc}", file=sys.stderr)
        return 1
    index = result.index
    summary: dict[str, JSON] = {
        "model": index.model,
        "dimensions": index.dimensions,
        "index": index.table,
        "embedded": result.done,
        "failed": result.failed,
        "outcome": result.phase,
        "retired": result.retired.model if result.retired else None,
    }
    if args.json:
        print_json(summary)
        return 0
    line = f"{index.model} ({index.dimensions} dimensions): {result.done} images embedded"
    if result.failed:
        line += f", {result.failed} left out (no variant or a missing object; run it again)"
    if result.phase == "swapped":
        old = f" (it replaces {result.retired.model})" if result.retired else ""
        line += f"; search now reads its index{old}"
    else:
        line += "; the index was already in use and is complete"
    print(line)
    return 0
