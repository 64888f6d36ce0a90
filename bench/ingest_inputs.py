"""Inputs of ``bench/ingest.py``, made once and cached (reruns skip the generation):

- ``photo_library(cache, count)``: a directory of ``count`` photo-like images, as a migrated
  library has them: JPEGs of 2 to 12 megapixels (camera EXIF, a tenth of them stored rotated
  with an EXIF orientation), and a few PNG and WebP files of 2 to 4 megapixels, in nested
  directories of 100 files. Deterministic for a given ``count`` (seeded).
- ``path_tree(cache, count)``: ``count`` empty ``.jpg`` files in 100 x 10 directories (the
  scan figures need paths, not pixels).

A directory is complete when its ``manifest.json`` exists (written last); an interrupted
generation is started over.
"""

from __future__ import annotations

import io
import json
import math
import multiprocessing
import os
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

CACHE = Path(__file__).resolve().parent.parent / ".bench-cache" / "ingest"
VERSION = 1  # bump when the images change, so stale caches are not reused
MIN_MEGAPIXELS, MAX_MEGAPIXELS = 2.0, 12.0
ASPECTS = ((4, 3), (3, 2), (16, 9), (1, 1))
BASE_SIZE = (4700, 3500)  # a crop of any aspect up to 12 MP fits in it (16:9 is 4619 wide)
BASES = 4  # base scenes (each with its own grain); images are crops of them
SEED = 16  # issue 16
OLD_MTIME = time.time() - 86400  # files older than any settle window


@dataclass(frozen=True)
class Library:
    """A generated photo library: its directory and what is in it."""

    root: Path
    count: int
    bytes: int
    megapixels: float  # summed over every image
    formats: dict[str, int]

    @property
    def mean_megapixels(self) -> float:
        return self.megapixels / self.count


@dataclass(frozen=True)
class Plan:
    """One image to make: where, which base, the crop, the format and the EXIF."""

    index: int
    path: str
    base: int
    size: tuple[int, int]  # the crop (landscape)
    offset: tuple[int, int]
    channels: tuple[int, int, int]  # a channel permutation, so no two images are alike
    fmt: str  # JPEG, PNG, WEBP
    # 1: stored as shot; 6: a portrait stored as landscape pixels with EXIF orientation 6
    # (how phones store it); 0: a portrait stored as portrait pixels (the crop transposed).
    orientation: int


def plan(count: int) -> list[Plan]:
    """What ``photo_library`` makes for ``count`` images (the same every time)."""
    rng = random.Random(SEED)
    plans = []
    for index in range(count):
        roll = rng.random()
        fmt = "PNG" if roll < 0.03 else "WEBP" if roll < 0.06 else "JPEG"
        high = MAX_MEGAPIXELS if fmt == "JPEG" else 4.0
        megapixels = rng.uniform(MIN_MEGAPIXELS, high)
        across, down = rng.choice(ASPECTS)
        height = math.sqrt(megapixels * 1e6 * down / across)
        size = (round(height * across / down), round(height))
        portrait = rng.random()
        orientation = 6 if fmt == "JPEG" and portrait < 0.1 else 0 if portrait < 0.3 else 1
        offset = (
            rng.randrange(0, BASE_SIZE[0] - size[0] + 1),
            rng.randrange(0, BASE_SIZE[1] - size[1] + 1),
        )
        first, second, third = rng.sample((0, 1, 2), 3)
        extension = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp"}[fmt]
        plans.append(
            Plan(
                index=index,
                path=f"shoot-{index // 100:03d}/IMG_{index:05d}{extension}",
                base=index % BASES,
                size=size,
                offset=offset,
                channels=(first, second, third),
                fmt=fmt,
                orientation=orientation,
            )
        )
    return plans


def _base(index: int, folder: Path) -> Path:
    """Base scene ``index`` (a PNG in the cache): gradients, lines and sensor-like grain."""
    path = folder / f"base-{index}.png"
    if path.exists():
        return path
    from PIL import Image
    from tests.support.images import photo

    width, height = BASE_SIZE
    image = photo(width, height)
    if index % 2:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    grain = Image.effect_noise((width, height), 14 + 4 * index).convert("RGB")
    image = Image.blend(image, grain, 0.10)
    partial = path.with_suffix(".tmp")
    image.save(partial, "PNG", compress_level=1)
    partial.rename(path)
    return path


_BASES: dict[int, object] = {}


def _make(args: tuple[Plan, str, str]) -> tuple[int, float]:
    """Write one planned image; returns its bytes and megapixels."""
    from PIL import Image
    from tests.support.images import camera_exif

    item, root, bases = args
    base = _BASES.get(item.base)
    if base is None:
        base = Image.open(Path(bases) / f"base-{item.base}.png")
        base.load()
        _BASES[item.base] = base
    assert isinstance(base, Image.Image)
    x, y = item.offset
    image = base.crop((x, y, x + item.size[0], y + item.size[1]))
    bands = image.split()
    image = Image.merge("RGB", tuple(bands[c] for c in item.channels))
    if item.orientation == 0:  # a portrait photo stored upright
        image = image.transpose(Image.Transpose.TRANSPOSE)
    target = Path(root) / item.path
    target.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    if item.fmt == "JPEG":
        exif = camera_exif(gps=item.index % 5 == 0)
        taken = f"20{10 + item.index % 15}:{1 + item.index % 12:02d}:07 10:11:12"
        exif.get_ifd(0x8769)[0x9003] = taken  # DateTimeOriginal: the keys' yyyy/mm
        if item.orientation == 6:
            exif[0x0112] = 6
        image.save(buffer, "JPEG", quality=88, exif=exif.tobytes())
    elif item.fmt == "PNG":
        image.save(buffer, "PNG", compress_level=6)
    else:
        image.save(buffer, "WEBP", quality=85)
    target.write_bytes(buffer.getvalue())
    os.utime(target, (OLD_MTIME, OLD_MTIME))
    return len(buffer.getvalue()), image.width * image.height / 1e6


def photo_library(count: int, cache: Path = CACHE, processes: int | None = None) -> Library:
    """The cached library of ``count`` images (made now if missing, on ``processes``
    processes: default every core)."""
    root = cache / f"photos-v{VERSION}-{count}"
    manifest = root / "manifest.json"
    if manifest.exists():
        data = json.loads(manifest.read_text())
        return Library(root / "library", count, data["bytes"], data["megapixels"], data["formats"])
    if root.exists():
        shutil.rmtree(root)
    bases = cache / f"bases-v{VERSION}"
    bases.mkdir(parents=True, exist_ok=True)
    plans = plan(count)
    for index in sorted({p.base for p in plans}):
        _base(index, bases)
    library = root / "library"
    library.mkdir(parents=True)
    # Spawned, not forked: the caller may hold threads and connections.
    with multiprocessing.get_context("spawn").Pool(processes or os.cpu_count() or 1) as pool:
        made = pool.map(_make, [(p, str(library), str(bases)) for p in plans], chunksize=4)
    formats: dict[str, int] = {}
    for item in plans:
        formats[item.fmt] = formats.get(item.fmt, 0) + 1
    total_bytes = sum(size for size, _ in made)
    megapixels = sum(mp for _, mp in made)
    manifest.write_text(
        json.dumps({"bytes": total_bytes, "megapixels": megapixels, "formats": formats})
    )
    return Library(library, count, total_bytes, megapixels, formats)


def path_tree(count: int, cache: Path = CACHE) -> Path:
    """The cached tree of ``count`` empty ``.jpg`` files: 100 top directories of 10
    subdirectories each, the files spread evenly (1,000 per directory at 1M)."""
    root = cache / f"tree-{count}"
    manifest = root / "manifest.json"
    if manifest.exists():
        return root / "tree"
    if root.exists():
        shutil.rmtree(root)
    tree = root / "tree"
    leaves = [tree / f"{top:03d}" / f"{sub:02d}" for top in range(100) for sub in range(10)]
    per_leaf = math.ceil(count / len(leaves))
    made = 0
    for leaf in leaves:
        leaf.mkdir(parents=True)
        for n in range(min(per_leaf, count - made)):
            path = leaf / f"IMG_{made + n:07d}.jpg"
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644))
        made += min(per_leaf, count - made)
        if made >= count:
            break
    manifest.write_text(json.dumps({"files": made}))
    return tree
