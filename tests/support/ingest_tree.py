"""A source tree for bulk ingest tests: nested directories, unicode names, every approved
extension (a multi-page TIFF and a 16-bit PNG among them), non-image files, an empty and a
truncated image, a symlink loop, and a file that is still growing while the scan runs."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from tests.support.images import camera_exif, encode, heic, jpeg, photo, quadrants

GROWING = "incoming/still-copying.jpg"


@dataclass
class Tree:
    root: Path
    good: dict[str, bytes] = field(default_factory=dict)  # path -> final bytes
    failed: dict[str, str] = field(default_factory=dict)  # path -> expected error code
    skipped: list[str] = field(default_factory=list)  # not images

    def write(self, path: str, data: bytes) -> None:
        target = self.root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


def sixteen_bit_png() -> bytes:
    """A 400x300 grey ramp with 16 bits per sample (Pillow mode I;16)."""
    ramp = Image.new("I;16", (400, 300))
    ramp.putdata([(x * 65535) // 399 for _ in range(300) for x in range(400)])
    return encode(ramp, "PNG")


def multi_page_tiff() -> bytes:
    first, second = quadrants(640, 480), photo(320, 240)
    return encode(first, "TIFF", save_all=True, append_images=[second])


def make_tree(root: Path) -> Tree:
    """Write the tree under ``root`` (all but the growing file: see ``growing_file``)."""
    tree = Tree(root)
    good = {
        "2019/summer/IMG_0001.jpg": jpeg(photo(1600, 1200), exif=camera_exif(gps=True)),
        "2019/summer/IMG_0002.JPEG": jpeg(photo(1200, 1600)),
        "2020/ünïcødé/カメラ 写真.png": encode(quadrants(900, 600), "PNG"),
        "2020/web/banner.WEBP": encode(photo(800, 300), "WEBP", quality=80),
        "scans/multi-page.tif": multi_page_tiff(),
        "scans/cmyk.tiff": encode(quadrants(500, 400).convert("CMYK"), "TIFF"),
        "scans/deep/sixteen-bit.png": sixteen_bit_png(),
        "phone/IMG_1000.heic": heic(quadrants(640, 480)),
        "phone/IMG_1001.HEIF": heic(photo(480, 640)),
        "phone/cmyk.jpg": jpeg(quadrants(400, 300).convert("CMYK")),
    }
    for path, data in good.items():
        tree.write(path, data)
    tree.good.update(good)
    failed = {
        "broken/empty.jpg": (b"", "empty_file"),
        "broken/truncated.png": (encode(photo(600, 400), "PNG")[:300], "corrupt_image"),
        "broken/not-really.jpg": (b"this is text, not a photo" * 10, "unsupported_type"),
        "broken/half.webp": (encode(photo(600, 400), "WEBP")[:200], "corrupt_image"),
    }
    for path, (data, code) in failed.items():
        tree.write(path, data)
        tree.failed[path] = code
    for path in ("notes.txt", "2019/summer/Thumbs.db", "video/clip.mov", "README"):
        tree.write(path, b"not an image")
        tree.skipped.append(path)
    os.symlink("..", root / "2019" / "summer" / "loop")  # 2019/summer/loop -> 2019
    return tree


@contextlib.contextmanager
def growing_file(tree: Tree, seconds: float = 4.0) -> Iterator[None]:
    """``GROWING`` written a piece at a time over ``seconds`` (a copy in progress), complete
    when the block ends."""
    data = jpeg(photo(1400, 1000))
    target = tree.root / GROWING
    target.parent.mkdir(parents=True, exist_ok=True)
    pieces = 20
    step = len(data) // pieces + 1
    done = threading.Event()

    def copy() -> None:
        with target.open("wb") as out:
            for offset in range(0, len(data), step):
                out.write(data[offset : offset + step])
                out.flush()
                time.sleep(seconds / pieces)
        done.set()

    target.write_bytes(b"")
    thread = threading.Thread(target=copy, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.wait(seconds + 10)
        thread.join(5)
    tree.good[GROWING] = data
