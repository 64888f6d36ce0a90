"""imaging/ on the real-world inputs of issue 13, items 1-4: transparency outside an alpha
channel, CICP/nclx colour, metadata that must not block a decode, JPEGs without EOI. Each
input is generated here; the files of tests/data/hardening are checked too."""

from __future__ import annotations

import math
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from mediajobs.errors import ImageRejected
from mediajobs.imaging import ImagePolicy, process_image
from mediajobs.imaging.pipeline import Variant
from tests.support.images import (
    decoded,
    encode,
    photo,
    png_chunk,
    png_file,
    stripe_centres,
    stripes,
    with_nclx,
)

POLICY = ImagePolicy()
HARDENING = Path(__file__).parents[1] / "data" / "hardening"
RED = (255, 0, 0)


def rejected(code: str, data: bytes, policy: ImagePolicy = POLICY) -> None:
    with pytest.raises(ImageRejected) as info:
        process_image(data, policy)
    assert info.value.code == code, info.value.message


def variants(data: bytes) -> list[tuple[Variant, Image.Image]]:
    result = process_image(data, POLICY)
    return [(v, decoded(v.data)) for v in result.variants if v.data]


# --- 1. transparency declared outside an alpha channel ----------------------------------


def _halves(left: bytes, right: bytes, width: int = 400, height: int = 300) -> bytes:
    """Rows whose left half repeats the sample ``left`` and right half ``right``."""
    row = left * (width // 2) + right * (width // 2)
    return row * height


def _bits(left: int, right: int, depth: int, width: int = 400, height: int = 300) -> bytes:
    """Packed rows of ``depth``-bit grey samples, ``left`` then ``right`` halves."""
    per_byte = 8 // depth
    samples = [left] * (width // 2) + [right] * (width // 2)
    row = bytearray()
    for i in range(0, width, per_byte):
        byte = 0
        for sample in samples[i : i + per_byte]:
            byte = (byte << depth) | sample
        row.append(byte)
    return bytes(row) * height


def _palette(alpha_table: bytes | None = None, index: int | None = None) -> bytes:
    image = Image.new("P", (400, 300), 0)
    image.putpalette([0, 255, 0, 255, 0, 0] + [0] * 762)
    image.paste(1, (200, 0, 400, 300))
    if alpha_table is not None:
        return encode(image, "PNG", transparency=alpha_table)
    return encode(image, "PNG", transparency=index)


def _left_transparent_png(kind: str) -> tuple[bytes, tuple[int, int, int]]:
    """A PNG whose left half is transparent through ``kind`` of declaration and whose right
    half is opaque; with the right half's colour."""
    grey_key = png_chunk(b"tRNS", struct.pack(">H", 3))
    if kind == "rgb-trns":
        image = stripes(((0, 255, 0), RED), 400)
        return encode(image, "PNG", transparency=(0, 255, 0)), RED
    if kind == "rgb16-trns":
        rows = _halves(struct.pack(">3H", 0, 65535, 0), struct.pack(">3H", 65535, 0, 0))
        key = png_chunk(b"tRNS", struct.pack(">3H", 0, 65535, 0))
        return png_file(400, 300, 16, 2, rows, before_idat=(key,)), RED
    if kind == "grey8-trns":
        image = stripes(((10,), (200,)), 400).convert("L")
        image = Image.new("L", (400, 300), 10)
        image.paste(200, (200, 0, 400, 300))
        return encode(image, "PNG", transparency=10), (200, 200, 200)
    if kind == "grey4-trns":
        return png_file(400, 300, 4, 0, _bits(3, 15, 4), before_idat=(grey_key,)), (255,) * 3
    if kind == "grey2-trns":
        return png_file(400, 300, 2, 0, _bits(3, 1, 2), before_idat=(grey_key,)), (85,) * 3
    if kind == "grey1-trns":
        key = png_chunk(b"tRNS", struct.pack(">H", 0))
        return png_file(400, 300, 1, 0, _bits(0, 1, 1), before_idat=(key,)), (255,) * 3
    if kind == "grey16-trns":
        rows = _halves(struct.pack(">H", 1000), struct.pack(">H", 1001))
        key = png_chunk(b"tRNS", struct.pack(">H", 1000))
        # 1000 and 1001 differ only at 16 bits: the key must be matched before 8 bits.
        return png_file(400, 300, 16, 0, rows, before_idat=(key,)), (3, 3, 3)
    if kind == "palette-alpha-table":
        return _palette(alpha_table=b"\x00\xff"), RED
    if kind == "palette-index":
        return _palette(index=0), RED
    if kind == "grey-alpha":
        image = Image.new("LA", (400, 300), (50, 0))
        image.paste((220, 255), (200, 0, 400, 300))
        return encode(image, "PNG"), (220, 220, 220)
    if kind == "rgba16":
        rows = _halves(struct.pack(">4H", 0, 0, 65535, 0), struct.pack(">4H", 65535, 0, 0, 65535))
        return png_file(400, 300, 16, 6, rows), RED
    raise AssertionError(kind)


TRANSPARENCY_KINDS = [
    "rgb-trns",
    "rgb16-trns",
    "grey8-trns",
    "grey4-trns",
    "grey2-trns",
    "grey1-trns",
    "grey16-trns",
    "palette-alpha-table",
    "palette-index",
    "grey-alpha",
    "rgba16",
]


def _assert_left_transparent(data: bytes, right: tuple[int, ...]) -> None:
    result = process_image(data, POLICY)
    assert result.has_alpha
    checked = 0
    for variant in result.variants:
        if not variant.data:
            continue
        image = decoded(variant.data)
        assert image.mode == "RGBA", variant.name
        w, h = image.size
        for x in (2, w // 4, w // 2 - 3):
            assert image.getpixel((x, h // 2))[3] == 0, (variant.name, x)  # type: ignore[index]
        for x in (w // 2 + 3, 3 * w // 4, w - 2):
            pixel = image.getpixel((x, h // 2))
            assert pixel[3] == 255, (variant.name, x, pixel)  # type: ignore[index]
            assert all(abs(a - b) <= 12 for a, b in zip(pixel[:3], right, strict=True)), pixel  # type: ignore[index]
        checked += 1
    assert checked >= 2


@pytest.mark.parametrize("kind", TRANSPARENCY_KINDS)
def test_every_way_of_declaring_transparency_keeps_it_in_every_variant(kind: str) -> None:
    data, right = _left_transparent_png(kind)
    _assert_left_transparent(data, right)


def test_the_hardening_colour_key_png_is_transparent_left_and_opaque_red_right() -> None:
    _assert_left_transparent((HARDENING / "rgb-png-trns-colorkey.png").read_bytes(), RED)


def test_premultiplied_alpha_avif_is_unpremultiplied_and_kept() -> None:
    from PIL import features

    if not features.check("avif"):
        pytest.skip("this Pillow has no AVIF codec")
    image = stripes(((0, 0, 0, 0), (255, 0, 0, 255)), 400)
    data = encode(image, "AVIF", quality=100, alpha_premultiplied=True)
    _assert_left_transparent(data, RED)


@pytest.mark.parametrize("mode", ["RGBa", "La"])
def test_premultiplied_modes_are_unpremultiplied(mode: str) -> None:
    from mediajobs.imaging.pipeline import _to_srgb

    image = Image.new("RGBA", (40, 30), (200, 100, 50, 128))
    if mode == "La":
        image = Image.new("LA", (40, 30), (200, 128))
    out = _to_srgb(image.convert(mode))
    assert out.mode == "RGBA"
    pixel = out.getpixel((5, 5))
    expected = (200, 100, 50, 128) if mode == "RGBa" else (200, 200, 200, 128)
    assert all(abs(a - b) <= 2 for a, b in zip(pixel, expected, strict=True)), pixel  # type: ignore[arg-type]


# --- 1b. no fringe where transparency meets the visible area ----------------------------
# Lossy WebP subsamples chroma 2x2 and codes 8x8 blocks, and with `exact` off libwebp
# smooths only the transparent pixels of blocks that also hold visible ones: at an edge on
# a block boundary (x = 200 in the hardening file) the colour under alpha 0 reaches the
# visible pixels unless the pipeline fills it first. The boxes below put every edge on one.

BOX = (104, 80, 304, 224)  # the transparent box in a 400x300 input: all multiples of 8
# In a 3200x2400 input, boxes whose first fully transparent column after the resampling
# falls on a multiple of 8: in detail_xl and thumb (x = 869), detail (846), card and
# preview (873).
BIG_BOXES = ((869, 150, 2400, 650), (846, 950, 2400, 1450), (873, 1750, 2400, 2250))
YELLOW, MAGENTA, TEAL = (255, 210, 0), (255, 0, 255), (0, 150, 160)


def _holed(
    size: tuple[int, int],
    boxes: tuple[tuple[int, int, int, int], ...],
    visible: tuple[int, ...],
    hidden: tuple[int, ...],
) -> Image.Image:
    """An opaque ``visible`` RGBA image with ``boxes`` of alpha-0 pixels whose RGB is
    ``hidden``."""
    image = Image.new("RGBA", size, (*visible[:3], 255))
    for box in boxes:
        image.paste((*hidden[:3], 0), box)
    return image


def _palette_hole() -> bytes:
    """A palette PNG: index 1 (TEAL) opaque around a BOX of index 0 (MAGENTA), transparent."""
    image = Image.new("P", (400, 300), 1)
    image.putpalette([*MAGENTA, *TEAL] + [0] * 762)
    image.paste(0, BOX)
    return encode(image, "PNG", transparency=0)


def _fractions(
    boxes: tuple[tuple[int, int, int, int], ...], size: tuple[int, int]
) -> list[tuple[float, ...]]:
    w, h = size
    return [(box[0] / w, box[1] / h, box[2] / w, box[3] / h) for box in boxes]


def _fringe_input(case: str) -> tuple[bytes, tuple[int, int, int], list[tuple[float, ...]]]:
    """Input bytes, the true visible colour, and the transparent boxes as fractions."""
    small, big = (400, 300), (3200, 2400)
    if case == "hardening-colour-key":
        data = (HARDENING / "rgb-png-trns-colorkey.png").read_bytes()
        return data, RED, [(0.0, 0.0, 0.5, 1.0)]
    if case == "alpha-over-blue":  # saturated blue left under alpha 0 by an editor
        image = _holed(small, (BOX,), YELLOW, (0, 0, 255))
        return encode(image, "PNG"), YELLOW, _fractions((BOX,), small)
    if case == "alpha-over-black":  # what premultiplied-then-unpremultiplied pixels hold
        image = _holed(small, (BOX,), RED, (0, 0, 0))
        return encode(image, "PNG"), RED, _fractions((BOX,), small)
    if case == "palette-index":
        return _palette_hole(), TEAL, _fractions((BOX,), small)
    if case == "downscaled":  # every variant resized: premultiplied, so black under alpha 0
        image = _holed(big, BIG_BOXES, MAGENTA, (0, 255, 0))
        return encode(image, "PNG"), MAGENTA, _fractions(BIG_BOXES, big)
    raise AssertionError(case)


FRINGE_CASES = [
    "hardening-colour-key",
    "alpha-over-blue",
    "alpha-over-black",
    "palette-index",
    "downscaled",
]


def _edge_pixels(
    image: Image.Image, box: tuple[float, ...]
) -> tuple[dict[str, list[tuple[int, ...]]], tuple[int, int]]:
    """The opaque pixels whose centres lie within 4 px outside each side of ``box`` (as
    fractions of the image; a side on the image's border has none), and the alpha extrema
    of the pixels whose centres lie 2.5 px or more inside it (the resampling reaches less
    far)."""
    w, h = image.size
    left, top, right, bottom = box[0] * w, box[1] * h, box[2] * w, box[3] * h
    inner = (math.ceil(left + 2), math.ceil(top + 2), math.floor(right - 2), math.floor(bottom - 2))
    alpha = image.getchannel("A").crop(inner).getextrema()
    assert isinstance(alpha[0], int) and isinstance(alpha[1], int)
    outside: dict[str, list[tuple[int, ...]]] = {"left": [], "top": [], "right": [], "bottom": []}
    pixels = image.load()
    assert pixels is not None
    for y in range(max(0, math.floor(top - 5)), min(h, math.ceil(bottom + 5))):
        for x in range(max(0, math.floor(left - 5)), min(w, math.ceil(right + 5))):
            cx, cy = x + 0.5, y + 0.5
            beside = top + 2.5 <= cy <= bottom - 2.5
            above = left + 2.5 <= cx <= right - 2.5
            if beside and above:
                continue
            pixel = pixels[x, y]
            assert isinstance(pixel, tuple)
            if pixel[3] != 255:
                continue
            if beside and left - 4 <= cx < left:
                outside["left"].append(pixel)
            elif beside and right < cx <= right + 4:
                outside["right"].append(pixel)
            elif above and top - 4 <= cy < top:
                outside["top"].append(pixel)
            elif above and bottom < cy <= bottom + 4:
                outside["bottom"].append(pixel)
    return outside, (alpha[0], alpha[1])


@pytest.mark.parametrize("case", FRINGE_CASES)
def test_the_colour_under_transparent_pixels_never_fringes_the_visible_edge(case: str) -> None:
    data, colour, boxes = _fringe_input(case)
    result = process_image(data, POLICY)
    assert result.has_alpha
    encoded = [v for v in result.variants if v.data]
    if case == "downscaled":
        assert [v.width for v in encoded] == [320, 640, 1024, 1600, 2560]
    for variant in encoded:
        image = decoded(variant.data)
        assert image.mode == "RGBA", variant.name
        for box in boxes:
            outside, inside_alpha = _edge_pixels(image, box)
            assert inside_alpha == (0, 0), (variant.name, box)
            for index, (side, pixels) in enumerate(outside.items()):
                if box[index] in (0.0, 1.0):
                    continue  # this side of the box is the image's border
                assert len(pixels) >= 10, (variant.name, box, side)
                worst = max(
                    max(abs(a - b) for a, b in zip(p[:3], colour, strict=True)) for p in pixels
                )
                assert worst <= 12, (variant.name, box, side, worst, colour)


def test_alpha_bleeding_fills_only_transparent_pixels_with_their_neighbours_colour() -> None:
    from mediajobs.imaging.bleed import bleed_alpha

    image = _holed((101, 77), ((26, 20, 76, 57),), (10, 200, 30), (250, 0, 250))
    image.putpixel((0, 0), (40, 50, 60, 128))  # a half-transparent pixel keeps its colour
    bled = bleed_alpha(image)
    assert bled.mode == "RGBA" and bled.size == image.size
    assert bled.getchannel("A").tobytes() == image.getchannel("A").tobytes()
    for (x, y), before in ((xy, image.getpixel(xy)) for xy in ((0, 0), (5, 5), (100, 76))):
        assert bled.getpixel((x, y)) == before
    for xy in ((26, 20), (50, 38), (75, 56)):  # the hole's corner, centre and far corner
        pixel = bled.getpixel(xy)
        assert isinstance(pixel, tuple) and pixel[3] == 0
        assert max(abs(a - b) for a, b in zip(pixel[:3], (10, 200, 30), strict=True)) <= 2, xy
    opaque = Image.new("RGB", (8, 8), RED)
    assert bleed_alpha(opaque) is opaque
    clear = Image.new("RGBA", (8, 8), (1, 2, 3, 0))
    assert bleed_alpha(clear) is clear


def _opaque_inputs() -> list[bytes]:
    rgba = Image.new("RGBA", (400, 300), (200, 10, 10, 255))
    unused_key = Image.new("P", (400, 300), 1)
    unused_key.putpalette([0, 255, 0, 255, 0, 0] + [0] * 762)
    la = Image.new("LA", (400, 300), (90, 255))
    return [
        encode(Image.new("RGB", (400, 300), RED), "PNG"),
        encode(rgba, "PNG"),  # an alpha channel, all opaque
        encode(unused_key, "PNG", transparency=0),  # a transparent index no pixel uses
        encode(Image.new("RGB", (400, 300), RED), "PNG", transparency=(0, 255, 0)),
        encode(la, "PNG"),
        encode(rgba, "WEBP", lossless=True),
    ]


@pytest.mark.parametrize("index", range(6))
def test_an_opaque_image_comes_out_without_alpha(index: int) -> None:
    result = process_image(_opaque_inputs()[index], POLICY)
    assert not result.has_alpha
    for _variant, image in variants(_opaque_inputs()[index]):
        assert image.mode in ("RGB", "L")


# --- 2. colour signalled by CICP / nclx ---------------------------------------------------

# Published linear-light matrices, independent of the code under test: Display P3 -> XYZ
# (D65) and XYZ -> sRGB (IEC 61966-2-1), and BT.2020 -> BT.709 (ITU-R BT.2087-0, eq. 4).
P3_TO_XYZ = ((0.4865709, 0.2656677, 0.1982173), (0.2289746, 0.6917385, 0.0792869))
P3_TO_XYZ += ((0.0000000, 0.0451134, 1.0439444),)
XYZ_TO_SRGB = ((3.2406, -1.5372, -0.4986), (-0.9689, 1.8758, 0.0415), (0.0557, -0.2040, 1.0570))
BT2020_TO_BT709 = ((1.6605, -0.5876, -0.0728), (-0.1246, 1.1329, -0.0083))
BT2020_TO_BT709 += ((-0.0182, -0.1006, 1.1187),)


def _srgb_decode(v: float) -> float:
    return v / 12.92 if v <= 0.04045 else ((v + 0.055) / 1.055) ** 2.4


def _srgb_encode(v: float) -> int:
    v = min(max(v, 0.0), 1.0)
    return round(255 * (12.92 * v if v <= 0.0031308 else 1.055 * v ** (1 / 2.4) - 0.055))


def _mul(m: tuple[tuple[float, ...], ...], v: list[float]) -> list[float]:
    return [sum(a * b for a, b in zip(row, v, strict=True)) for row in m]


def _expected(rgb: tuple[int, int, int], primaries: str) -> tuple[int, ...]:
    linear = [_srgb_decode(c / 255) for c in rgb]
    if primaries == "p3":
        out = _mul(XYZ_TO_SRGB, _mul(P3_TO_XYZ, linear))
    else:
        out = _mul(BT2020_TO_BT709, linear)
    return tuple(_srgb_encode(c) for c in out)


def _avif(image: Image.Image) -> bytes:
    from PIL import features

    if not features.check("avif"):
        pytest.skip("this Pillow has no AVIF codec")
    return encode(image, "AVIF", quality=100, subsampling="4:4:4")


COLOURS = ((200, 100, 60), (40, 180, 90), (90, 80, 210))


def _close(found: list[tuple[int, ...]], wanted: list[tuple[int, ...]], tolerance: int) -> None:
    for got, want in zip(found, wanted, strict=True):
        assert all(abs(a - b) <= tolerance for a, b in zip(got[:3], want, strict=True)), (
            found,
            wanted,
        )


def test_the_hardening_display_p3_avif_becomes_srgb() -> None:
    data = (HARDENING / "avif-nclx-displayp3.avif").read_bytes()
    for _variant, image in variants(data):
        _close([image.getpixel((10, 10))], [(215, 93, 47)], 4)  # type: ignore[list-item]


@pytest.mark.parametrize(
    ("container", "primaries", "code"),
    [
        ("avif", "p3", 12),
        ("avif", "bt2020", 9),
        ("heic", "p3", 12),
        ("heic", "bt2020", 9),
    ],
)
def test_cicp_primaries_without_icc_are_converted_to_srgb(
    container: str, primaries: str, code: int
) -> None:
    image = stripes(COLOURS)
    if container == "avif":
        data = with_nclx(_avif(image), code, 13)
    else:
        data = encode(
            image,
            "HEIF",
            quality=100,
            chroma=444,
            color_primaries=code,
            transfer_characteristics=13,
            matrix_coefficients=6,
            full_range_flag=1,
        )
    source = stripe_centres(decoded(data).convert("RGB"), 3)  # as stored, before conversion
    wanted = [_expected(rgb, primaries) for rgb in source]  # type: ignore[arg-type]
    assert wanted[0] != source[0]  # the conversion is not a no-op
    for _variant, out in variants(data):
        _close(stripe_centres(out, 3), wanted, 4)


def test_srgb_cicp_is_left_as_is() -> None:
    image = stripes(COLOURS)
    data = with_nclx(_avif(image), 1, 13)
    source = stripe_centres(decoded(data).convert("RGB"), 3)
    _close(stripe_centres(variants(data)[0][1], 3), source, 3)  # type: ignore[arg-type]


def _pq_signal(nits: float) -> float:
    """SMPTE ST 2084 inverse EOTF: cd/m2 -> signal 0..1."""
    m1, m2 = 2610 / 16384, 2523 / 4096 * 128
    c1, c2, c3 = 3424 / 4096, 2413 / 4096 * 32, 2392 / 4096 * 32
    y = (nits / 10000) ** m1
    return ((c1 + c2 * y) / (1 + c3 * y)) ** m2


def _tone_mapped_srgb(nits: float) -> int:
    """The documented tone map: 203 cd/m2 = 1.0, identity to 0.8, then a roll-off to 1."""
    x = nits / 203
    if x > 0.8:
        x = 0.8 + 0.2 * (x - 0.8) / (x - 0.8 + 0.2)
    return _srgb_encode(x)


def test_pq_grey_is_tone_mapped_without_crushing_or_clipping() -> None:
    levels = (1.0, 20.0, 203.0, 600.0, 1000.0)
    codes = tuple(round(_pq_signal(nits) * 255) for nits in levels)
    image = stripes(tuple((c, c, c) for c in codes), width=1000)
    data = with_nclx(_avif(image), 9, 16)  # BT.2100 PQ
    out = stripe_centres(variants(data)[0][1], len(levels))
    greys = [pixel[0] for pixel in out]
    wanted = [_tone_mapped_srgb(nits) for nits in levels]
    assert all(abs(a - b) <= 4 for a, b in zip(greys, wanted, strict=True)), (greys, wanted)
    assert greys[0] > 5  # dark detail is not crushed to black
    assert greys == sorted(greys) and len(set(greys)) == len(greys)  # no clipping plateau
    assert greys[-1] < 255


def test_a_grey_pq_avif_is_tone_mapped_too() -> None:
    code = round(_pq_signal(203.0) * 255)
    _avif(Image.new("L", (8, 8)))  # skips without an AVIF codec
    grey = encode(Image.new("L", (400, 300), code), "AVIF", quality=100)  # 4:0:0
    data = with_nclx(grey, 9, 16)
    assert decoded(data).mode == "L"
    pixel = decoded(process_image(data, POLICY).variants[0].data).convert("RGB").getpixel((9, 9))
    assert all(abs(c - _tone_mapped_srgb(203.0)) <= 4 for c in pixel), pixel  # type: ignore[union-attr]


def test_hlg_is_converted_monotonically_and_not_clipped() -> None:
    codes = (30, 90, 150, 191, 230)
    image = stripes(tuple((c, c, c) for c in codes), width=1000)
    data = with_nclx(_avif(image), 9, 18)  # ARIB STD-B67 HLG
    greys = [pixel[0] for pixel in stripe_centres(variants(data)[0][1], len(codes))]
    # BT.2100 HLG inverse OETF and a 1000 cd/m2 OOTF (gamma 1.2), then the same tone map.
    a, b = 0.17883277, 1 - 4 * 0.17883277
    c = 0.5 - a * math.log(4 * a)
    wanted = []
    for code in codes:
        e = code / 255
        scene = e * e / 3 if e <= 0.5 else (math.exp((e - c) / a) + b) / 12
        wanted.append(_tone_mapped_srgb(1000 * scene**1.2))
    assert all(abs(x - y) <= 4 for x, y in zip(greys, wanted, strict=True)), (greys, wanted)
    assert greys == sorted(greys) and greys[0] > 5 and greys[-1] < 255


# --- 3. metadata never blocks the pixels; limits name their cause ---------------------


def _png_with(*chunks: bytes) -> bytes:
    image = Image.new("RGB", (400, 300), (30, 120, 200))
    plain = encode(image, "PNG")
    end = plain.index(b"IDAT") - 4
    return plain[:end] + b"".join(chunks) + plain[end:]


def _itxt(keyword: bytes, text: bytes) -> bytes:
    return png_chunk(b"iTXt", keyword + b"\0\x01\x00\0\0" + zlib.compress(text, 9))


def _ztxt(keyword: bytes, text: bytes) -> bytes:
    return png_chunk(b"zTXt", keyword + b"\0\x00" + zlib.compress(text, 9))


def _iccp(profile: bytes) -> bytes:
    return png_chunk(b"iCCP", b"huge\0\x00" + zlib.compress(profile, 9))


METADATA_CASES = {
    "xmp-itxt-inflating-to-2-mib": lambda: _png_with(
        _itxt(b"XML:com.adobe.xmp", b"<x:xmpmeta>" + b" " * (2 << 20) + b"</x:xmpmeta>")
    ),
    "ztxt-inflating-to-3-mib": lambda: _png_with(_ztxt(b"Comment", b"a" * (3 << 20))),
    "70-mib-of-text-in-many-chunks": lambda: _png_with(*[_ztxt(b"Comment", b"b" * 1_000_000)] * 70),
    "icc-profile-inflating-to-2-mib": lambda: _png_with(_iccp(b"\0" * (2 << 20))),
    "icc-profile-not-zlib": lambda: _png_with(png_chunk(b"iCCP", b"x\0\x00not zlib data")),
    "text-chunk-with-a-bad-crc": lambda: _png_with(png_chunk(b"tEXt", b"k\0v", crc=1)),
    "ancillary-chunk-with-a-bad-crc": lambda: _png_with(png_chunk(b"pHYs", b"\0" * 9, crc=7)),
    "exif-chunk-of-garbage": lambda: _png_with(png_chunk(b"eXIf", b"MM\0*garbage" * 50)),
}


@pytest.mark.parametrize("case", sorted(METADATA_CASES))
def test_oversized_or_malformed_png_metadata_is_dropped_not_refused(case: str) -> None:
    data = METADATA_CASES[case]()
    result = process_image(data, POLICY)
    assert (result.width, result.height) == (400, 300)
    assert result.sha256 == __import__("hashlib").sha256(data).hexdigest()  # of the upload
    _close([decoded(result.variants[0].data).getpixel((5, 5))], [(30, 120, 200)], 6)  # type: ignore[list-item]


def test_the_hardening_png_with_a_2_mib_xmp_chunk_is_processed() -> None:
    data = (HARDENING / "png-2mb-xmp-itxt.png").read_bytes()
    result = process_image(data, POLICY)
    assert len(result.variants) == 5 and result.variants[0].data


def _jpeg_with_segment(marker: int, body: bytes) -> bytes:
    plain = encode(Image.new("RGB", (400, 300), (30, 120, 200)), "JPEG", quality=95)
    return plain[:2] + struct.pack(">BBH", 0xFF, marker, len(body) + 2) + body + plain[2:]


@pytest.mark.parametrize(
    ("marker", "body"),
    [
        (0xE1, b"Exif\0\0MM\0*\0\0\0\x08\xff\xff" + b"\x13" * 200),  # IFD with 65535 entries
        (0xE1, b"Exif\0\0II*\0\xff\xff\xff\x7f"),  # IFD offset past the end
        (0xE2, b"ICC_PROFILE\0\x01\x01" + b"not a profile" * 40),
        (0xE2, b"MPF\0MM\0*\0\0\0\x08\0\x03garbage"),  # a broken multi-picture index
        (0xE1, b"http://ns.adobe.com/xap/1.0/\0<x:xmpmeta" + b"\0" * 3000),
    ],
)
def test_malformed_jpeg_metadata_is_ignored(marker: int, body: bytes) -> None:
    result = process_image(_jpeg_with_segment(marker, body), POLICY)
    assert result.exif == {} and result.gps is None
    _close([decoded(result.variants[0].data).getpixel((5, 5))], [(30, 120, 200)], 6)  # type: ignore[list-item]


def test_webp_with_malformed_exif_is_processed() -> None:
    image = Image.new("RGB", (400, 300), (30, 120, 200))
    data = encode(image, "WEBP", quality=95, exif=b"Exif\0\0MM\0*\0\0\xff\xff" + b"\x01" * 64)
    result = process_image(data, POLICY)
    assert result.exif == {}
    _close([decoded(result.variants[0].data).getpixel((5, 5))], [(30, 120, 200)], 6)  # type: ignore[list-item]


def test_a_header_over_pillows_bomb_limit_is_too_many_pixels_not_corrupt() -> None:
    small = encode(Image.new("RGB", (400, 300), RED), "JPEG")
    sof = small.index(b"\xff\xc0")
    huge = small[: sof + 5] + struct.pack(">HH", 60000, 60000) + small[sof + 9 :]
    rejected("too_many_pixels", huge)  # the policy's cap, from the header
    rejected("too_many_pixels", huge, ImagePolicy(max_megapixels=100_000))  # Pillow's guard


@pytest.mark.parametrize("fmt", ["AVIF", "HEIF"])
def test_an_avif_or_heic_too_large_for_its_decoder_is_too_many_pixels(fmt: str) -> None:
    if fmt == "AVIF":
        small = _avif(Image.new("RGB", (400, 300), RED))
    else:
        small = encode(Image.new("RGB", (400, 300), RED), "HEIF", quality=80)
    at = small.index(b"ispe") + 8  # the container's image size box
    huge = small[:at] + struct.pack(">II", 20000, 20000) + small[at + 8 :]
    rejected("too_many_pixels", huge)
    rejected("too_many_pixels", huge, ImagePolicy(max_megapixels=100_000))


# --- 4. complete scans without EOI versus files cut short -----------------------------


def _jpegs() -> dict[str, bytes]:
    picture = photo(1200, 900)
    return {
        "baseline": encode(picture, "JPEG", quality=90),
        "progressive": encode(picture, "JPEG", quality=90, progressive=True),
        "grey": encode(Image.new("RGB", (1200, 900), (128, 128, 128)), "JPEG", quality=90),
        "dark": encode(Image.new("RGB", (1200, 900), (0, 0, 0)), "JPEG", quality=90),
    }


def _same_variants(a: bytes, b: bytes) -> None:
    first, second = process_image(a, POLICY), process_image(b, POLICY)
    assert [v.data for v in first.variants] == [v.data for v in second.variants]


@pytest.mark.parametrize("kind", ["baseline", "progressive", "grey", "dark"])
def test_a_jpeg_missing_only_its_eoi_gives_the_complete_files_pixels(kind: str) -> None:
    full = _jpegs()[kind]
    assert full.endswith(b"\xff\xd9")
    _same_variants(full[:-2], full)
    _same_variants(full[:-1], full)  # half of the marker


@pytest.mark.parametrize("kind", ["baseline", "progressive", "grey", "dark"])
@pytest.mark.parametrize("fraction", [0.5, 0.9, 0.99])
def test_a_jpeg_cut_short_stays_corrupt(kind: str, fraction: float) -> None:
    full = _jpegs()[kind]
    rejected("corrupt_image", full[: int(len(full) * fraction)])


def test_a_jpeg_missing_its_last_scan_byte_is_corrupt() -> None:
    full = _jpegs()["baseline"]
    rejected("corrupt_image", full[:-3])


def test_a_progressive_jpeg_cut_at_a_scan_boundary_is_corrupt() -> None:
    full = _jpegs()["progressive"]
    last_scan = full.rindex(b"\xff\xda")
    rejected("corrupt_image", full[:last_scan])
    rejected("corrupt_image", full[: full.rindex(b"\xff\xda", 0, last_scan)])


def test_trailing_bytes_after_eoi_are_ignored() -> None:
    full = _jpegs()["baseline"]
    _same_variants(full + b"\0garbage after the image" * 10, full)


def test_the_hardening_jpeg_missing_its_eoi_is_processed_as_the_complete_file() -> None:
    data = (HARDENING / "jpeg-missing-eoi.jpg").read_bytes()
    assert not data.endswith(b"\xff\xd9")
    _same_variants(data, data + b"\xff\xd9")


def _png_parts() -> tuple[bytes, int]:
    data = encode(photo(600, 400), "PNG")
    return data, data.rindex(b"IEND") - 4


def test_a_png_missing_iend_or_the_last_crc_is_accepted() -> None:
    data, iend = _png_parts()
    _same_variants(data[:iend], data)  # no IEND
    _same_variants(data[: iend - 4], data)  # nor the last IDAT's CRC


@pytest.mark.parametrize("fraction", [0.5, 0.9, 0.99])
def test_a_png_with_its_image_data_cut_short_is_corrupt(fraction: float) -> None:
    data, iend = _png_parts()
    rejected("corrupt_image", data[: int(iend * fraction)])
