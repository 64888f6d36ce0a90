"""imaging/catalog.py and imaging/watermark.py: catalog derivatives for bulk ingest (every
approved format, sizes, EXIF, the tiled watermark, the profile's JSON form), with images
made here."""

from __future__ import annotations

import asyncio
import pickle
import struct
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from PIL import Image, ImageChops, ImageStat

from mediajobs.errors import ImageRejected
from mediajobs.handlers import imaging_pool
from mediajobs.handlers.imaging_pool import ImagingOutOfMemory, ImagingPool, PoolOptions
from mediajobs.imaging import ImagePolicy, probe
from mediajobs.imaging import watermark as watermark_module
from mediajobs.imaging.catalog import (
    CatalogImage,
    CatalogProfile,
    WatermarkLogoInvalid,
    WatermarkSpec,
    detect_catalog_type,
    make_catalog,
)
from mediajobs.imaging.watermark import apply_watermark, tile_positions
from tests.support.images import (
    BLUE,
    RED,
    camera_exif,
    close_to,
    decoded,
    encode,
    heic,
    jpeg,
    oriented_jpeg,
    photo,
    png_bomb,
    png_file,
    quadrants,
)

PROFILE = CatalogProfile()
GREEN = (20, 200, 40)


def tiff_rgb16(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A baseline little-endian TIFF (TIFF 6.0), one uncompressed strip of 16-bit RGB
    samples, for what Pillow cannot save."""
    pixels = struct.pack("<3H", *rgb) * (width * height)
    count = 10
    bits_at = 8 + 2 + count * 12 + 4
    strip_at = bits_at + 6

    def long(tag: int, value: int, kind: int = 4, n: int = 1) -> bytes:
        return struct.pack("<HHII", tag, kind, n, value)

    def short(tag: int, value: int) -> bytes:
        return struct.pack("<HHIHH", tag, 3, 1, value, 0)

    entries = (
        long(256, width),
        long(257, height),
        long(258, bits_at, kind=3, n=3),  # BitsPerSample: 16, 16, 16 (stored after the IFD)
        short(259, 1),  # no compression
        short(262, 2),  # RGB
        long(273, strip_at),
        short(277, 3),
        long(278, height),
        long(279, len(pixels)),
        short(284, 1),
    )
    assert len(entries) == count
    return (
        b"II*\x00"
        + struct.pack("<IH", 8, count)
        + b"".join(entries)
        + b"\x00\x00\x00\x00"
        + struct.pack("<3H", 16, 16, 16)
        + pixels
    )


def png_rgb16(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    return png_file(width, height, 16, 2, struct.pack(">3H", *rgb) * (width * height))


def multipage_tiff() -> bytes:
    first = quadrants(640, 480)
    second = Image.new("RGB", (200, 900), BLUE)
    return encode(first, "TIFF", save_all=True, append_images=[second])


def cmyk_red() -> Image.Image:
    return Image.new("CMYK", (640, 480), (0, 255, 255, 0))


# (name, bytes, detected type, upright size, the colour at the thumbnail's top-left quarter)
FORMATS: dict[str, tuple[Callable[[], bytes], str, tuple[int, int], tuple[int, int, int]]] = {
    "jpeg": (lambda: jpeg(quadrants(640, 480)), "image/jpeg", (640, 480), RED),
    "png": (lambda: encode(quadrants(640, 480), "PNG"), "image/png", (640, 480), RED),
    "webp": (
        lambda: encode(quadrants(640, 480), "WEBP", quality=95),
        "image/webp",
        (640, 480),
        RED,
    ),
    "tiff multi-page": (multipage_tiff, "image/tiff", (640, 480), RED),
    "tiff lzw": (
        lambda: encode(quadrants(640, 480), "TIFF", compression="tiff_lzw"),
        "image/tiff",
        (640, 480),
        RED,
    ),
    "png 16-bit rgb": (
        lambda: png_rgb16(320, 240, (65535, 32768, 0)),
        "image/png",
        (320, 240),
        (255, 128, 0),
    ),
    "png 16-bit grey": (
        lambda: encode(Image.new("I;16", (320, 240), 32768), "PNG"),
        "image/png",
        (320, 240),
        (128, 128, 128),
    ),
    "tiff 16-bit rgb": (
        lambda: tiff_rgb16(320, 240, (65535, 32768, 0)),
        "image/tiff",
        (320, 240),
        (255, 128, 0),
    ),
    "tiff 16-bit grey": (
        lambda: encode(Image.new("I;16", (320, 240), 32768), "TIFF"),
        "image/tiff",
        (320, 240),
        (128, 128, 128),
    ),
    "cmyk jpeg": (
        lambda: encode(cmyk_red(), "JPEG", quality=95),
        "image/jpeg",
        (640, 480),
        (255, 0, 0),
    ),
    "cmyk tiff": (lambda: encode(cmyk_red(), "TIFF"), "image/tiff", (640, 480), (255, 0, 0)),
    "heic": (lambda: heic(quadrants(640, 480)), "image/heic", (640, 480), RED),
    "avif": (lambda: encode(quadrants(640, 480), "AVIF"), "image/avif", (640, 480), RED),
}


@pytest.mark.parametrize("name", list(FORMATS))
def test_every_approved_format_gives_a_thumbnail_and_a_watermarked_preview(name: str) -> None:
    make, detected, size, colour = FORMATS[name]
    result = make_catalog(make(), PROFILE, filename=f"x.{name}")
    assert result.detected_type == detected
    assert (result.width, result.height) == size
    thumbnail, preview = decoded(result.thumbnail.data), decoded(result.preview.data)
    assert (thumbnail.format, result.thumbnail.content_type) == ("WEBP", "image/webp")
    assert (preview.format, result.preview.content_type) == ("JPEG", "image/jpeg")
    assert preview.mode == "RGB"
    assert thumbnail.size == (result.thumbnail.width, result.thumbnail.height)
    assert preview.size == (result.preview.width, result.preview.height) == size  # no upscale
    assert max(thumbnail.size) == 300
    corner = thumbnail.convert("RGB").getpixel((thumbnail.width // 8, thumbnail.height // 8))
    assert close_to(corner, colour, tolerance=30), corner
    assert "exif" not in preview.info and "icc_profile" not in preview.info
    assert result.blur_data_url.startswith("data:image/webp;base64,")


def test_a_multi_page_tiff_gives_its_first_page() -> None:
    result = make_catalog(multipage_tiff(), PROFILE)
    assert result.frames == 2
    assert (result.width, result.height) == (640, 480)  # the second page is 200 x 900 blue
    thumbnail = decoded(result.thumbnail.data)
    right = thumbnail.convert("RGB").getpixel((thumbnail.width * 7 // 8, thumbnail.height // 8))
    assert close_to(right, GREEN)


def test_bytes_decide_the_type_whatever_the_name() -> None:
    data = encode(quadrants(), "TIFF")
    assert detect_catalog_type(data, None, "photo.jpg") == "image/tiff"
    assert detect_catalog_type(jpeg(), None, "photo.tif") == "image/jpeg"
    assert make_catalog(jpeg(), PROFILE, filename="IMG.HEIC").detected_type == "image/jpeg"


def test_landscape_and_portrait_fit_inside_the_thumbnail_square_and_the_preview_edge() -> None:
    landscape = make_catalog(jpeg(photo(4032, 3024)), PROFILE)
    assert (landscape.thumbnail.width, landscape.thumbnail.height) == (300, 225)
    assert (landscape.preview.width, landscape.preview.height) == (1200, 900)
    portrait = make_catalog(jpeg(photo(1500, 4000)), PROFILE)
    assert (portrait.thumbnail.width, portrait.thumbnail.height) == (112, 300)
    assert (portrait.preview.width, portrait.preview.height) == (450, 1200)


def test_small_and_extreme_images_are_accepted_and_never_upscaled() -> None:
    tiny = make_catalog(encode(Image.new("RGB", (40, 16), RED), "PNG"), PROFILE)
    assert (tiny.width, tiny.height) == (40, 16)
    assert (tiny.thumbnail.width, tiny.thumbnail.height) == (40, 16)
    assert (tiny.preview.width, tiny.preview.height) == (40, 16)
    strip = make_catalog(encode(Image.new("RGB", (3000, 10), RED), "PNG"), PROFILE)
    assert (strip.thumbnail.width, strip.thumbnail.height) == (300, 1)
    assert (strip.preview.width, strip.preview.height) == (1200, 4)


def test_a_thumbnail_larger_than_the_preview_is_made_from_the_decode() -> None:
    profile = CatalogProfile(thumbnail_size=600, preview_size=200)
    result = make_catalog(jpeg(quadrants(800, 600)), profile)
    assert (result.thumbnail.width, result.thumbnail.height) == (600, 450)
    assert (result.preview.width, result.preview.height) == (200, 150)


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_is_applied_to_both_derivatives(orientation: int) -> None:
    result = make_catalog(oriented_jpeg(orientation), PROFILE)
    assert (result.width, result.height) == (800, 600)
    assert (result.thumbnail.width, result.thumbnail.height) == (300, 225)
    thumbnail = decoded(result.thumbnail.data).convert("RGB")
    assert close_to(thumbnail.getpixel((30, 30)), RED)
    assert close_to(thumbnail.getpixel((270, 30)), GREEN)


def test_exif_taken_at_is_read_and_gps_is_kept_apart() -> None:
    result = make_catalog(jpeg(photo(800, 600), exif=camera_exif()), PROFILE)
    assert result.taken_at == datetime(2024, 5, 6, 7, 8, 9)
    assert result.taken_at.tzinfo is None  # EXIF gave no offset
    assert result.exif["make"] == "Canon" and result.exif["iso"] == 400
    assert result.gps == {"latitude": 52.3701389, "longitude": 4.8916667, "altitude": 12.0}
    assert not {"latitude", "longitude", "gps"} & set(result.exif)
    for derivative in (result.thumbnail, result.preview):
        assert b"Exif" not in derivative.data and b"Canon" not in derivative.data


def test_taken_at_carries_the_exif_offset_and_is_none_without_exif() -> None:
    exif = camera_exif(gps=False)
    exif.get_ifd(0x8769)[0x9011] = "+02:00"  # OffsetTimeOriginal
    result = make_catalog(jpeg(exif=exif), PROFILE)
    assert result.taken_at == datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone(timedelta(hours=2)))
    assert result.gps is None
    bare = make_catalog(jpeg(), PROFILE)
    assert (bare.taken_at, bare.gps, bare.exif) == (None, None, {})


def test_size_sha256_and_frames_describe_the_source() -> None:
    import hashlib

    data = jpeg()
    result = make_catalog(data, PROFILE)
    assert result.source_bytes == len(data)
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert result.frames == 1


def test_alpha_is_flattened_on_white_in_the_preview_and_kept_in_the_thumbnail() -> None:
    clear = Image.new("RGBA", (600, 400), (255, 0, 0, 0))
    clear.paste((0, 0, 255, 255), (0, 0, 100, 400))
    result = make_catalog(encode(clear, "PNG"), PROFILE)
    preview = decoded(result.preview.data)
    assert preview.mode == "RGB"
    colours = preview.getcolors(preview.width * preview.height)
    assert colours is not None
    _count, commonest = max(colours, key=lambda item: item[0])
    assert close_to(commonest, (255, 255, 255), tolerance=8)  # white, not the hidden red
    thumbnail = decoded(result.thumbnail.data)
    assert thumbnail.mode == "RGBA"
    assert thumbnail.getpixel((thumbnail.width - 5, 5))[3] == 0  # type: ignore[index]


@pytest.mark.parametrize(
    ("code", "data", "profile"),
    [
        ("empty_file", b"", PROFILE),
        ("file_too_large", jpeg(), CatalogProfile(max_bytes=1024)),
        ("too_many_pixels", jpeg(quadrants(800, 600)), CatalogProfile(max_megapixels=0.4)),
        ("unsupported_type", encode(quadrants(), "GIF"), PROFILE),
        ("unsupported_type", b"just some text, not an image", PROFILE),
        ("corrupt_image", encode(quadrants(), "PNG")[:2000], PROFILE),
        ("corrupt_image", encode(quadrants(), "TIFF")[:5000], PROFILE),
    ],
)
def test_bad_files_are_rejected_with_the_upload_codes(
    code: str, data: bytes, profile: CatalogProfile
) -> None:
    with pytest.raises(ImageRejected) as info:
        make_catalog(data, profile, filename="bad.jpg")
    assert info.value.code == code, info.value.message


def test_an_unsupported_file_is_named_and_tiff_is_listed() -> None:
    with pytest.raises(ImageRejected) as info:
        make_catalog(encode(quadrants(), "BMP"), PROFILE, filename="scan.bmp")
    assert "'scan.bmp'" in info.value.message and "image/tiff" in info.value.message


def test_the_profile_cap_applies_above_pillows_bomb_warning_limit() -> None:
    # 95 MP from the header alone (no decode): under the catalog's 100 MP, over Pillow's
    # 89.5 MP warning limit, which refuses it for uploads (60 MP cap) as before.
    bomb = png_bomb(10_000, 9_500)
    found, _image = probe(bomb, PROFILE.probe_policy(), detect=detect_catalog_type)
    assert (found.width, found.height) == (10_000, 9_500)
    with pytest.raises(ImageRejected) as info:
        probe(bomb, CatalogProfile(max_megapixels=90).probe_policy(), detect=detect_catalog_type)
    assert info.value.code == "too_many_pixels"
    with pytest.raises(ImageRejected) as info:
        probe(bomb, ImagePolicy())
    assert info.value.code == "too_many_pixels"
    # Over Pillow's hard limit (2 x its warning limit) the words are ours, not Pillow's.
    with pytest.raises(ImageRejected) as info:
        make_catalog(png_bomb(14_000, 13_000), PROFILE, filename="huge.png")
    assert info.value.code == "too_many_pixels"
    assert info.value.message == "the image is 182.0 megapixels, over the cap of 100"


def changed_quadrants(before: Image.Image, after: Image.Image) -> list[int]:
    """The largest per-channel difference in each quadrant, left-right, top-bottom."""
    w, h = before.size
    out = []
    for box in (
        (0, 0, w // 2, h // 2),
        (w // 2, 0, w, h // 2),
        (0, h // 2, w // 2, h),
        (w // 2, h // 2, w, h),
    ):
        diff = ImageChops.difference(before.crop(box), after.crop(box))
        out.append(max(high for _low, high in diff.getextrema()))  # type: ignore[union-attr]
    return out


@pytest.mark.parametrize("shade", [(255, 255, 255), (0, 0, 0)])
def test_the_watermark_shows_on_white_and_on_black_in_every_quadrant(
    shade: tuple[int, int, int],
) -> None:
    plain = Image.new("RGB", (1200, 800), shade)
    marked = apply_watermark(plain, WatermarkSpec())
    assert marked.size == plain.size and marked.mode == "RGB"
    assert plain.getcolors() == [(1200 * 800, shade)]  # a new image: the input is untouched
    assert all(change >= 40 for change in changed_quadrants(plain, marked))
    grey = marked.convert("L")
    low, high = grey.getextrema()  # type: ignore[misc]
    if shade == (255, 255, 255):
        assert low <= 200  # the dark outline reads on white
    else:
        assert high >= 60  # the light glyphs read on black


@pytest.mark.parametrize("shade", [(255, 255, 255), (0, 0, 0)])
def test_the_preview_of_a_flat_image_is_watermarked_all_over(shade: tuple[int, int, int]) -> None:
    result = make_catalog(jpeg(Image.new("RGB", (2400, 1600), shade)), PROFILE)
    preview = decoded(result.preview.data).convert("RGB")
    plain = Image.new("RGB", preview.size, shade)
    assert all(change >= 40 for change in changed_quadrants(plain, preview))


@pytest.mark.parametrize(
    "spec",
    [WatermarkSpec(), WatermarkSpec(angle=0, size=0.2), WatermarkSpec(angle=-90, opacity=1.0)],
)
def test_tiles_pasted_one_by_one_give_the_pixels_of_one_composited_overlay(
    spec: WatermarkSpec,
) -> None:
    image = Image.radial_gradient("L").resize((1200, 900)).convert("RGB")
    tile = watermark_module._tile(spec, 1200, None)
    overlay = Image.new("RGBA", image.size, (0, 0, 0, 0))
    positions = tile_positions(image.size, tile.size, watermark_module._gap(spec, 1200))
    for x, y in positions:
        overlay.paste(tile, (x, y))
    composited = image.copy()
    composited.paste(overlay, (0, 0), overlay)
    # The same pixels: no two tiles overlap, so pasting each through its own alpha is the
    # composite of the whole overlay.
    assert ImageChops.difference(apply_watermark(image, spec), composited).getbbox() is None


def test_opacity_and_text_size_change_the_mark() -> None:
    white = Image.new("RGB", (1000, 700), (255, 255, 255))
    faint = ImageStat.Stat(apply_watermark(white, WatermarkSpec(opacity=0.1)).convert("L"))
    strong = ImageStat.Stat(apply_watermark(white, WatermarkSpec(opacity=1.0)).convert("L"))
    assert strong.mean[0] < faint.mean[0] < 255
    small = apply_watermark(white, WatermarkSpec(size=0.02, angle=0))
    large = apply_watermark(white, WatermarkSpec(size=0.2, angle=0))
    assert ImageChops.difference(small, large).getbbox() is not None
    turned = apply_watermark(white, WatermarkSpec(size=0.02, angle=-45))
    assert ImageChops.difference(small, turned).getbbox() is not None


def test_a_logo_is_tiled_alongside_the_text() -> None:
    logo = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    logo.paste((230, 20, 20, 255), (8, 8, 56, 56))
    white = Image.new("RGB", (1200, 800), (255, 255, 255))
    marked = apply_watermark(white, WatermarkSpec(opacity=1.0), encode(logo, "PNG"))
    reds = [
        pixel
        for pixel in marked.get_flattened_data()
        if pixel[0] > 180 and pixel[1] < 80 and pixel[2] < 80  # type: ignore[index]
    ]
    assert len(reds) > 1000
    text_only = apply_watermark(white, WatermarkSpec(opacity=1.0))
    assert not any(p[0] > 180 and p[1] < 80 for p in text_only.get_flattened_data())  # type: ignore[index]
    result = make_catalog(jpeg(), PROFILE, logo=encode(logo, "PNG"))
    assert result.preview.width == 800


@pytest.mark.parametrize(
    "data", [b"not a png", jpeg(), encode(Image.new("RGBA", (5000, 4000)), "PNG")]
)
def test_a_logo_that_cannot_be_used_raises_its_own_error(data: bytes) -> None:
    with pytest.raises(WatermarkLogoInvalid) as info:
        make_catalog(jpeg(), PROFILE, logo=data)
    assert info.value.code == "watermark_logo_invalid"


@pytest.mark.parametrize(("width", "height"), [(1200, 800), (40, 16), (300, 2000), (1200, 1200)])
def test_tiles_never_overlap_and_their_grid_covers_the_image(width: int, height: int) -> None:
    tile, gap = (217, 152), 48
    positions = tile_positions((width, height), tile, gap)
    boxes = [(x, y, x + tile[0], y + tile[1]) for x, y in positions]
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], (a, b)
    # Every pixel lies in some tile's cell (the tile and the gap right of and below it).
    cells = [(x, y, x + tile[0] + gap, y + tile[1] + gap) for x, y in positions]
    for px in range(0, width, 7):
        for py in range(0, height, 7):
            assert any(c[0] <= px < c[2] and c[1] <= py < c[3] for c in cells), (px, py)


def test_threads_do_not_change_the_result() -> None:
    data = jpeg(photo(1600, 1200))
    one = make_catalog(data, PROFILE, threads=1)
    two = make_catalog(data, PROFILE, threads=4)
    assert one == two


def test_profile_json_round_trips_with_every_field_in_camel_case() -> None:
    profile = CatalogProfile(
        prefix="library-2026",
        thumbnail_size=256,
        watermark=WatermarkSpec(text="ACME", opacity=0.5, angle=-20, logo="s3://brand/logo.png"),
        max_megapixels=150,
    )
    value = profile.to_json()
    assert value == {
        "prefix": "library-2026",
        "thumbnailSize": 256,
        "thumbnailQuality": 75,
        "previewSize": 1200,
        "previewQuality": 85,
        "watermark": {
            "text": "ACME",
            "opacity": 0.5,
            "angle": -20,
            "size": 0.04,
            "logo": "s3://brand/logo.png",
        },
        "maxBytes": 200 * 1024 * 1024,
        "maxMegapixels": 150,
    }
    assert CatalogProfile.from_json(value) == profile
    assert CatalogProfile.from_json({}) == CatalogProfile()
    assert CatalogProfile.from_json({"watermark": {"opacity": 1}}) == CatalogProfile(
        watermark=WatermarkSpec(opacity=1)
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"thumbnail_size": 300}, "thumbnail_size: unknown field"),
        ({"colour": "red"}, "colour: unknown field"),
        ({"watermark": {"font": "x"}}, "watermark.font: unknown field"),
        ({"thumbnailSize": "300"}, "thumbnailSize: must be an integer"),
        ({"thumbnailSize": True}, "thumbnailSize: must be an integer"),
        ({"thumbnailSize": 300.0}, "thumbnailSize: must be an integer"),
        ({"thumbnailSize": 8}, "thumbnailSize: must be an integer, 16..8192"),
        ({"previewSize": 9000}, "previewSize: must be an integer, 16..8192"),
        ({"thumbnailQuality": 0}, "thumbnailQuality: must be an integer, 1..100"),
        ({"previewQuality": 101}, "previewQuality: must be an integer, 1..100"),
        ({"maxBytes": 0}, "maxBytes: must be an integer"),
        ({"maxBytes": 1023}, "maxBytes: must be an integer"),
        ({"maxBytes": 1 << 31}, "maxBytes: must be an integer"),
        ({"maxMegapixels": 0}, "maxMegapixels: must be a number, 0.01 <="),
        ({"maxMegapixels": 0.009}, "maxMegapixels: must be a number, 0.01 <="),
        ({"maxMegapixels": 500}, "maxMegapixels: must be a number, 0.01 <="),
        ({"maxMegapixels": "100"}, "maxMegapixels: must be an integer or a number"),
        ({"prefix": "a/b"}, "prefix: must be one key segment"),
        ({"prefix": ""}, "prefix: must be one key segment"),
        ({"prefix": None}, "prefix: must be a string"),
        ({"watermark": "text"}, "watermark: must be an object"),
        ({"watermark": {"text": ""}}, "watermark.text: must be 1..100 characters"),
        ({"watermark": {"text": "x" * 101}}, "watermark.text: must be 1..100 characters"),
        ({"watermark": {"text": "   "}}, "watermark.text: must be printable"),
        ({"watermark": {"text": "a\nb"}}, "watermark.text: must be printable"),
        ({"watermark": {"text": 5}}, "watermark.text: must be a string"),
        ({"watermark": {"opacity": 0}}, "watermark.opacity: must be 0 < opacity <= 1"),
        ({"watermark": {"opacity": 1.5}}, "watermark.opacity: must be 0 < opacity <= 1"),
        ({"watermark": {"opacity": float("nan")}}, "watermark.opacity: must be a number"),
        ({"watermark": {"angle": 91}}, "watermark.angle: must be -90..90"),
        ({"watermark": {"size": 0.001}}, "watermark.size: must be 0.01..0.5"),
        ({"watermark": {"size": 0.6}}, "watermark.size: must be 0.01..0.5"),
        ({"watermark": {"logo": "logo.png"}}, "watermark.logo: must be a store locator"),
        ({"watermark": {"logo": "s3://bucket/../x"}}, "watermark.logo: must be a store locator"),
        ({"watermark": {"logo": 3}}, "watermark.logo: must be a string or null"),
    ],
)
def test_profile_from_json_names_the_bad_field(value: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match="^" + message.replace(".", r"\.").replace("(", r"\(")):
        CatalogProfile.from_json(value)


def test_profile_from_json_refuses_what_is_not_an_object() -> None:
    with pytest.raises(ValueError, match=r"^profile: must be an object"):
        CatalogProfile.from_json([])  # type: ignore[arg-type]


def test_profile_and_result_cross_the_process_boundary() -> None:
    profile = CatalogProfile(watermark=WatermarkSpec(text="ACME"))
    assert pickle.loads(pickle.dumps(profile)) == profile
    result = make_catalog(jpeg(exif=camera_exif()), profile)
    assert pickle.loads(pickle.dumps(result)) == result
    error = WatermarkLogoInvalid("bad logo")
    assert str(pickle.loads(pickle.dumps(error))) == "bad logo"


def test_the_pool_runs_make_catalog_on_one_thread_with_the_profile_filename_and_logo() -> None:
    pool = ImagingPool(PoolOptions(processes=1))
    calls: list[tuple[Any, ...]] = []

    async def inline(
        fn: Callable[..., Any], *args: Any, pass_threads: bool = False, priority: int = 0
    ) -> Any:
        calls.append((fn, args, pass_threads, priority))
        return fn(*args, *((1,) if pass_threads else ()))

    pool.run = inline  # type: ignore[method-assign]
    data = jpeg()
    result = asyncio.run(pool.catalog(data, PROFILE, filename="a.jpg", priority=-10))
    assert isinstance(result, CatalogImage) and result.width == 800
    # One thread: an ingest wants throughput, the other cores have its other files.
    assert calls == [(imaging_pool.run_make_catalog, (data, PROFILE, "a.jpg", None, 1), False, -10)]


def test_running_out_of_memory_in_the_child_is_imaging_out_of_memory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def exhausted(*_args: object, **_kwargs: object) -> CatalogImage:
        raise MemoryError

    monkeypatch.setattr(imaging_pool, "make_catalog", exhausted)
    with pytest.raises(ImagingOutOfMemory):
        imaging_pool.run_make_catalog(jpeg(), PROFILE, None, None, 1)
