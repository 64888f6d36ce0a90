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

from mediajobs.cli.common import Commands, bounded, print_json
from mediajobs.config import Settings
from mediajobs.vision.model import ClipModel, ModelInvalid, load_clip_model
from mediajobs.vision.tags import load_vocabulary

# The images `models check` times: a library's thumbnails and previews are about this size
# (the media.embed handler embeds the smallest variant at least as large as the model's
# input; the default variant set has 320 and 640 pixel ones).
_CHECK_IMAGE = (640, 480)


def add_models(commands: Commands) -> None:
    """The ``models`` command's parser and its subcommands."""
    models = commands.add_parser(
        "models", help="check: the CLIP model of embeddings, tags and search"
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
    """Load and measure the model; print its facts (``--json``: one object)."""
    directory = args.model_dir or settings.clip_model_dir
    if directory is None:
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
    report = {
        "enabled": True,
        **model.info.as_json(),
        "vocabulary": len(vocabulary),
        **figures,
    }
    if args.json:
        print_json(report)
        return 0
    info = model.info
    print(f"model       {info.name} ({info.directory})")
    print(f"dimension   {info.embed_dim}")
    print(f"input       {info.image_size}x{info.image_size}, text of {info.context_length} tokens")
    print(f"providers   {', '.join(info.providers)}")
    print(f"batch size  {info.batch_size}")
    print(f"vocabulary  {len(vocabulary)} concepts")
    print(
        f"speed       {figures['imagesPerSecond']:g} images/s "
        f"(640x480, preprocessing + inference), a text query in {figures['textQueryMs']:g} ms"
    )
    return 0
