"""The imaging floor of ``bench/ingest.py``: the catalog derivatives of every image, made by
a bare loop of Pillow calls on all cores (one process per core, ``multiprocessing``), with
no queue, no database and no storage. Ingest throughput over this is
``ratio_vs_floor_throughput``.

Per image, the same derivatives as the ``catalog`` profile, made the cheapest sensible way
(a fair floor, not a strawman):
- read the file, SHA-256 of its bytes;
- open; a JPEG is decoded with DCT scaling (``draft``) to the smallest scale that still
  covers the 1200 px preview (the same rule as the upload pipeline: only when the target is
  at most half the stored size); load;
- convert to RGB, resize to the preview's stored size (Hamming, ``reducing_gap=3``, the
  pipeline's filter), then apply the EXIF orientation to the small image (cheaper than
  transposing the full decode, the pipeline's order too);
- the tiled text watermark: one rotated tile per preview size (cached; the look of
  ``imaging.watermark``: white text with a black outline, 4% of the long edge, 30 degrees,
  opacity 0.35), pasted in a grid straight onto the preview through its own alpha (the
  cheapest "over" compositing Pillow has); JPEG quality 85;
- the thumbnail from the un-watermarked preview, fit inside 300x300 (Hamming), WebP quality
  75, method 4 (libwebp's default effort, the pipeline's too).
What the floor leaves out and ingest does: EXIF to JSON, ICC/sRGB checks, the blur
placeholder, header checks before decoding, moving bytes between processes, uploads, the
database.
"""

from __future__ import annotations

import functools
import hashlib
import io
import multiprocessing
import os
import time
from dataclasses import dataclass
from pathlib import Path

PREVIEW_EDGE, PREVIEW_QUALITY = 1200, 85
THUMBNAIL_EDGE, THUMBNAIL_QUALITY, WEBP_METHOD = 300, 75, 4
TEXT, OPACITY, ANGLE, TEXT_SIZE = "mediajobs", 0.35, 30.0, 0.04  # WatermarkSpec's defaults
ORIENTATION_TAG = 0x0112


@dataclass(frozen=True)
class FloorResult:
    """One floor run: per image, when it was finished (``time.time()``), from ``started``."""

    started: float
    done_at: list[float]
    processes: int
    output_bytes: int


def _fit(width: int, height: int, edge: int) -> tuple[int, int]:
    if max(width, height) <= edge:
        return width, height
    scale = edge / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


@functools.lru_cache(maxsize=32)
def _tile(long_edge: int) -> object:
    from PIL import Image, ImageDraw, ImageFont

    pixels = max(8, round(TEXT_SIZE * long_edge))
    font = ImageFont.load_default(size=pixels)
    stroke = max(1, round(pixels / 14))
    left, top, right, bottom = (round(v) for v in font.getbbox(TEXT, stroke_width=stroke))
    pad = stroke + 1
    tile = Image.new("RGBA", (right - left + 2 * pad, bottom - top + 2 * pad), (0, 0, 0, 0))
    ImageDraw.Draw(tile).text(
        (pad - left, pad - top),
        TEXT,
        font=font,
        fill=(255, 255, 255, 255),
        stroke_width=stroke,
        stroke_fill=(0, 0, 0, 255),
    )
    tile.putalpha(tile.getchannel("A").point([round(a * OPACITY) for a in range(256)]))
    return tile.rotate(ANGLE, Image.Resampling.BICUBIC, expand=True), pixels


def _watermark(image: object) -> object:
    """The tiles pasted straight onto the image through their own alpha: the tiles never
    overlap, so this is "over" compositing of the whole tiled overlay, in the tiles' area
    only (an overlay image composited in one step gives the same pixels at 3.5x the cost:
    8.8 against 2.5 ms on a 1200x900 preview, or 12.7 ms with ``alpha_composite``)."""
    from PIL import Image

    assert isinstance(image, Image.Image)
    tile, gap = _tile(max(image.size))  # type: ignore[misc]
    marked = image.copy()
    step_x, step_y = tile.width + gap, tile.height + gap
    for row, y in enumerate(range(-step_y // 2, image.height, step_y)):
        for x in range(-(step_x // 2) * (row % 2), image.width, step_x):
            marked.paste(tile, (x, y), tile)
    return marked


def derivatives(path: str) -> tuple[float, int]:
    """Make one image's preview and thumbnail; returns when it finished and the bytes made."""
    from PIL import Image

    data = Path(path).read_bytes()
    hashlib.sha256(data).hexdigest()
    with Image.open(io.BytesIO(data)) as opened:
        orientation = opened.getexif().get(ORIENTATION_TAG, 1)
        swaps = orientation in (5, 6, 7, 8)
        upright = opened.size[::-1] if swaps else opened.size
        target = _fit(*upright, PREVIEW_EDGE)
        stored_target = target[::-1] if swaps else target
        if opened.format == "JPEG" and stored_target[0] * 2 <= opened.width:
            opened.draft("RGB", stored_target)
        opened.load()
        image = opened.convert("RGB") if opened.mode != "RGB" else opened.copy()
    if image.size != stored_target:
        image = image.resize(stored_target, Image.Resampling.HAMMING, reducing_gap=3.0)
    transpose = {
        2: Image.Transpose.FLIP_LEFT_RIGHT,
        3: Image.Transpose.ROTATE_180,
        4: Image.Transpose.FLIP_TOP_BOTTOM,
        5: Image.Transpose.TRANSPOSE,
        6: Image.Transpose.ROTATE_270,
        7: Image.Transpose.TRANSVERSE,
        8: Image.Transpose.ROTATE_90,
    }.get(orientation)
    if transpose is not None:
        image = image.transpose(transpose)
    preview = io.BytesIO()
    _watermark(image).save(preview, "JPEG", quality=PREVIEW_QUALITY)  # type: ignore[attr-defined]
    thumbnail = image.resize(
        _fit(*image.size, THUMBNAIL_EDGE), Image.Resampling.HAMMING, reducing_gap=3.0
    )
    small = io.BytesIO()
    thumbnail.save(small, "WEBP", quality=THUMBNAIL_QUALITY, method=WEBP_METHOD)
    return time.time(), preview.tell() + small.tell()


def _warm(_: int) -> int:
    """Imports, codecs and the font, before the clock starts."""
    from PIL import Image

    image = Image.new("RGB", (1600, 1200), (90, 120, 200))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG")
    _watermark(image.resize((1200, 900)))
    Image.open(io.BytesIO(buffer.getvalue())).load()
    return os.getpid()


def run_floor(paths: list[Path], processes: int | None = None) -> FloorResult:
    """Every image of ``paths`` through ``derivatives`` on ``processes`` processes (default:
    one per core), fed one image at a time from a shared queue so no process idles while
    another has a backlog. The clock starts once every process is warm."""
    processes = processes or os.cpu_count() or 1
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        warm: set[int] = set()
        while len(warm) < processes:  # every process has imported Pillow and drawn a tile
            warm.update(pool.map(_warm, range(processes * 2), chunksize=1))
        started = time.time()
        results = list(pool.imap_unordered(derivatives, [str(p) for p in paths], chunksize=1))
    return FloorResult(
        started=started,
        done_at=sorted(at for at, _ in results),
        processes=processes,
        output_bytes=sum(size for _, size in results),
    )


def steady_rate(
    spans: list[tuple[float, float, int]], low: float = 0.1, high: float = 0.9
) -> float:
    """Images per second in the middle of a run: between the moments the ``low`` and the
    ``high`` fractions of the images were done (no start-up, no ramp-down), the same
    measure for the floor and for ingest. ``spans``: (start, end, images) of each unit of
    work; its images count as done evenly over the span. The floor gives one image per
    span at its finishing moment; ingest gives its batch jobs, whose files are committed
    together at the end (counting them only then would credit a window with the work of
    batches that were mostly done before it began)."""
    total = sum(n for _, _, n in spans)

    def done(t: float) -> float:
        count = 0.0
        for start, end, n in spans:
            if t >= end:
                count += n
            elif t > start:
                count += n * (t - start) / (end - start)
        return count

    def moment(fraction: float) -> float:
        lo, hi = min(s for s, _, _ in spans), max(e for _, e, _ in spans)
        for _ in range(60):  # bisection: done() is monotonic
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if done(mid) < fraction * total else (lo, mid)
        return hi

    first, last = moment(low), moment(high)
    if last <= first:
        return 0.0
    return (done(last) - done(first)) / (last - first)
