"""Images made in the tests: no binary fixtures."""

from __future__ import annotations

import io
import struct
import zlib

import pillow_heif
from PIL import Image, ImageDraw

pillow_heif.register_heif_opener()

RED, GREEN, BLUE, WHITE = (230, 20, 20), (20, 200, 40), (30, 40, 220), (250, 250, 250)

# The inverse of each EXIF orientation's display transform: storing upright.transpose(this)
# with that orientation tag makes a viewer that honours the tag show the upright image.
STORE_FOR_ORIENTATION = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def quadrants(width: int = 800, height: int = 600) -> Image.Image:
    """Red top-left, green top-right, blue bottom-left, white bottom-right."""
    image = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(image)
    half_w, half_h = width // 2, height // 2
    draw.rectangle((0, 0, half_w - 1, half_h - 1), fill=RED)
    draw.rectangle((half_w, 0, width - 1, half_h - 1), fill=GREEN)
    draw.rectangle((0, half_h, half_w - 1, height - 1), fill=BLUE)
    draw.rectangle((half_w, half_h, width - 1, height - 1), fill=WHITE)
    return image


def photo(width: int = 4032, height: int = 3024) -> Image.Image:
    """Photo-like content: smooth gradients with detail lines (compresses like a photo)."""
    radial = Image.radial_gradient("L").resize((width, height))
    linear = Image.linear_gradient("L").resize((width, height))
    image = Image.merge("RGB", (radial, radial.transpose(Image.Transpose.ROTATE_180), linear))
    draw = ImageDraw.Draw(image)
    for x in range(0, width, 53):
        draw.line((x, 0, width - x, height), fill=(x % 251, 120, 200 - x % 97), width=2)
    for y in range(0, height, 71):
        draw.ellipse((y % width, y, y % width + 140, y + 90), outline=(250, y % 200, 30), width=3)
    return image


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def jpeg(
    image: Image.Image | None = None, *, exif: Image.Exif | None = None, **params: object
) -> bytes:
    image = image or quadrants()
    if exif is not None:
        params["exif"] = exif.tobytes()
    return encode(image, "JPEG", quality=92, **params)


def oriented_jpeg(orientation: int, upright: Image.Image | None = None) -> bytes:
    """A JPEG that shows ``upright`` when its EXIF orientation is honoured."""
    upright = upright or quadrants()
    method = STORE_FOR_ORIENTATION[orientation]
    stored = upright if method is None else upright.transpose(method)
    exif = Image.Exif()
    exif[0x0112] = orientation
    return jpeg(stored, exif=exif)


def camera_exif(*, gps: bool = True) -> Image.Exif:
    exif = Image.Exif()
    exif[0x010F] = "Canon"
    exif[0x0110] = "EOS R5"
    ifd = exif.get_ifd(0x8769)
    ifd[0x8827] = 400
    ifd[0x829D] = 2.8
    ifd[0x829A] = 0.008
    ifd[0x920A] = 50.0
    ifd[0x9003] = "2024:05:06 07:08:09"
    ifd[0xA434] = "RF50mm F1.2 L USM"
    if gps:
        gps_ifd = exif.get_ifd(0x8825)
        gps_ifd[1] = "N"
        gps_ifd[2] = (52.0, 22.0, 12.5)
        gps_ifd[3] = "E"
        gps_ifd[4] = (4.0, 53.0, 30.0)
        gps_ifd[6] = 12.0
    return exif


def heic(image: Image.Image | None = None, **params: object) -> bytes:
    return encode(image or quadrants(), "HEIF", quality=90, **params)


def png_chunk(kind: bytes, body: bytes, *, crc: int | None = None) -> bytes:
    """One PNG chunk: length, type, data, CRC (the right one unless ``crc`` is given)."""
    checksum = zlib.crc32(kind + body) & 0xFFFFFFFF if crc is None else crc
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", checksum)


def png_file(
    width: int,
    height: int,
    bit_depth: int,
    colour_type: int,
    rows: bytes,
    *,
    before_idat: tuple[bytes, ...] = (),
) -> bytes:
    """A PNG written by hand, for what Pillow cannot save (16-bit RGB, tRNS at 16 bits,
    chunks with bad CRCs...): ``rows`` are the unfiltered scanlines, each given filter 0."""
    stride = len(rows) // height
    raw = b"".join(b"\x00" + rows[y * stride : (y + 1) * stride] for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + b"".join(before_idat)
        + png_chunk(b"IDAT", zlib.compress(raw))
        + png_chunk(b"IEND", b"")
    )


def png_bomb(width: int = 40_000, height: int = 40_000) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` grey pixels over a few hundred bytes
    of zlib data: decoding it would need gigabytes."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = zlib.compressobj(9)
    data = rows.compress(b"\x00" * (width + 1) * 64) + rows.flush()
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", data)
        + png_chunk(b"IEND", b"")
    )


def with_nclx(data: bytes, primaries: int, transfer: int) -> bytes:
    """An AVIF or HEIC whose ``colr``/``nclx`` box is re-labelled with other CICP colour
    primaries and transfer characteristics (ITU-T H.273); the matrix coefficients, and so
    the decoded RGB samples, stay as encoded."""
    start = data.index(b"colrnclx") + 8
    return data[:start] + struct.pack(">HH", primaries, transfer) + data[start + 4 :]


def stripes(
    colors: tuple[tuple[int, ...], ...], width: int = 800, height: int = 300
) -> Image.Image:
    """Vertical stripes of flat colour, left to right."""
    mode = "RGBA" if len(colors[0]) == 4 else "RGB"
    image = Image.new(mode, (width, height))
    step = width // len(colors)
    for i, color in enumerate(colors):
        image.paste(color, (i * step, 0, (i + 1) * step, height))
    return image


def stripe_centres(image: Image.Image, count: int) -> list[tuple[int, ...]]:
    """The pixel at the centre of each of ``count`` vertical stripes."""
    step = image.width / count
    return [image.getpixel((int(step * (i + 0.5)), image.height // 2)) for i in range(count)]  # type: ignore[misc]


def animated(fmt: str, colors: tuple[tuple[int, int, int], ...] = (RED, GREEN, BLUE)) -> bytes:
    frames = [Image.new("RGB", (400, 300), color) for color in colors]
    return encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)


def decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def close_to(pixel: object, color: tuple[int, ...], tolerance: int = 40) -> bool:
    assert isinstance(pixel, tuple)
    return all(abs(a - b) <= tolerance for a, b in zip(pixel[:3], color[:3], strict=True))


def swapped_primaries_icc() -> bytes:
    """A valid ICC v2 RGB profile whose red and blue primaries are swapped: a pixel stored
    as pure red in it *is* blue, so only a real colour conversion turns it blue in sRGB."""

    def s15(value: float) -> bytes:
        return struct.pack(">i", round(value * 65536))

    def xyz(x: float, y: float, z: float) -> bytes:
        return b"XYZ \0\0\0\0" + s15(x) + s15(y) + s15(z)

    curve = b"curv\0\0\0\0" + struct.pack(">IH", 1, 0x0233) + b"\0\0"  # gamma 2.2
    text = b"swapped primaries\0"
    desc = (
        b"desc\0\0\0\0" + struct.pack(">I", len(text)) + text + b"\0" * 8 + b"\0" * 3 + b"\0" * 67
    )
    tags = [
        (b"desc", desc),
        (b"wtpt", xyz(0.9642, 1.0, 0.8249)),
        (b"rXYZ", xyz(0.1431, 0.0606, 0.7141)),  # sRGB's blue (D50)
        (b"gXYZ", xyz(0.3851, 0.7169, 0.0971)),
        (b"bXYZ", xyz(0.4361, 0.2225, 0.0139)),  # sRGB's red (D50)
        (b"rTRC", curve),
        (b"gTRC", curve),
        (b"bTRC", curve),
        (b"cprt", b"text\0\0\0\0public domain\0"),
    ]
    offset = 128 + 4 + 12 * len(tags)
    table, body = b"", b""
    for signature, data in tags:
        data += b"\0" * (-len(data) % 4)
        table += signature + struct.pack(">II", offset + len(body), len(data))
        body += data
    size = offset + len(body)
    header = (
        struct.pack(">I", size)
        + b"none"
        + struct.pack(">I", 0x02100000)
        + b"mntrRGB XYZ "
        + struct.pack(">6H", 2024, 1, 1, 0, 0, 0)
        + b"acsp"
        + b"\0" * 24
        + struct.pack(">I", 0)  # perceptual
        + s15(0.9642)
        + s15(1.0)
        + s15(0.8249)
        + b"none"
        + b"\0" * 44
    )
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + body
