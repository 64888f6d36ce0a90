"""The inputs of issue 13 (``tests/data/hardening/``, copies of ``../shared/hardening/``)
through the real flow, with the app and a worker in process: init -> PUT straight to
storage -> complete -> the processing job -> the item and its variants, each with the right
value."""

from __future__ import annotations

import filecmp
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.support.images import decoded
from tests.support.sse import bearer
from tests.support.uploads import upload

pytestmark = pytest.mark.timeout(180)

INPUTS = Path(__file__).resolve().parent.parent / "data" / "hardening"
ORIGINALS = Path(__file__).resolve().parents[3] / "shared" / "hardening"
USER = bearer("hardening")
RED = (255, 0, 0)


async def processed(
    client: httpx.AsyncClient, data: bytes, filename: str, content_type: str
) -> dict[str, Any]:
    """Upload ``data`` as a browser would; the item, which must have come out ready."""
    item = await upload(client, USER, data, filename, content_type)
    assert item["job"]["state"] == "succeeded", item
    assert item["status"] == "ready", item
    return item


async def variants(client: httpx.AsyncClient, item: dict[str, Any]) -> dict[str, Image.Image]:
    images = {}
    for name, variant in item["variants"].items():
        fetched = await client.get(variant["url"])
        assert fetched.status_code == 200, name
        images[name] = decoded(fetched.content)
    assert images
    return images


def test_the_copies_equal_the_shared_inputs() -> None:
    if not ORIGINALS.is_dir():
        pytest.skip(f"{ORIGINALS} is not beside this clone")
    names = sorted(p.name for p in ORIGINALS.iterdir())
    match, mismatch, missing = filecmp.cmpfiles(ORIGINALS, INPUTS, names, shallow=False)
    assert (mismatch, missing) == ([], []) and match == names


async def test_rgb_png_with_a_trns_colour_key_keeps_its_transparent_half(
    client: httpx.AsyncClient,
) -> None:
    data = (INPUTS / "rgb-png-trns-colorkey.png").read_bytes()
    item = await processed(client, data, "key.png", "image/png")
    for name, image in (await variants(client, item)).items():
        rgba = image.convert("RGBA")
        w, h = rgba.size
        for y in (h // 4, h // 2, 3 * h // 4):
            assert rgba.getpixel((w // 8, y))[3] == 0, name
            assert rgba.getpixel((w // 4, y))[3] == 0, name
            red = rgba.getpixel((7 * w // 8, y))
            assert red[3] == 255 and red[0] > 240 and red[1] < 15 and red[2] < 15, (name, red)
            # The first opaque pixel at the edge is red too: no fringe of the key colour.
            edge = next(x for x in range(w // 2, w) if rgba.getpixel((x, y))[3] == 255)
            pixel = rgba.getpixel((edge, y))
            assert all(abs(a - b) <= 12 for a, b in zip(pixel[:3], RED, strict=True)), (
                name,
                edge,
                pixel,
            )


async def test_display_p3_signalled_by_nclx_becomes_srgb(client: httpx.AsyncClient) -> None:
    data = (INPUTS / "avif-nclx-displayp3.avif").read_bytes()
    item = await processed(client, data, "p3.avif", "image/avif")
    for name, image in (await variants(client, item)).items():
        rgb = image.convert("RGB")
        pixel = rgb.getpixel((rgb.width // 2, rgb.height // 2))
        assert all(abs(a - b) <= 4 for a, b in zip(pixel, (215, 93, 47), strict=True)), (
            name,
            pixel,
        )


async def test_a_png_with_2mb_of_xmp_text_is_processed(client: httpx.AsyncClient) -> None:
    data = (INPUTS / "png-2mb-xmp-itxt.png").read_bytes()
    item = await processed(client, data, "xmp.png", "image/png")
    assert item["width"] and item["height"]


async def test_a_jpeg_without_its_eoi_marker_gives_the_complete_files_pixels(
    client: httpx.AsyncClient,
) -> None:
    data = (INPUTS / "jpeg-missing-eoi.jpg").read_bytes()
    assert not data.endswith(b"\xff\xd9")
    cut = await processed(client, data, "noeoi.jpg", "image/jpeg")
    whole = await processed(client, data + b"\xff\xd9", "whole.jpg", "image/jpeg")
    cut_images, whole_images = await variants(client, cut), await variants(client, whole)
    assert set(cut_images) == set(whole_images)
    for name, image in cut_images.items():
        assert image.tobytes() == whole_images[name].tobytes(), name


async def test_jpeg_bytes_named_heic_are_accepted_as_jpeg(client: httpx.AsyncClient) -> None:
    data = (INPUTS / "jpeg-bytes-named-IMG_0001.HEIC").read_bytes()
    item = await processed(client, data, "IMG_0001.HEIC", "image/jpeg")
    assert item["detectedType"] == "image/jpeg"
    assert item["filename"].lower().endswith(".jpg"), item["filename"]


async def test_an_emoji_file_name_keeps_a_stem_and_its_extension(
    client: httpx.AsyncClient,
) -> None:
    data = (INPUTS / "emoji-name.jpg").read_bytes()
    item = await processed(client, data, "🌅.jpg", "image/jpeg")
    key_name = item["path"].rsplit("/", 1)[-1]
    stem, _, ext = key_name.rpartition(".")
    assert stem and ext == "jpg", key_name
    assert "🌅" in item["filename"], item["filename"]
