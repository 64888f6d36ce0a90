"""What the bytes hold, read before Pillow decodes them: metadata that must not block a
decode is pruned from PNGs, and a JPEG that ends without its end-of-image marker is checked
for complete scans; the size an AVIF or HEIC container declares. Pure functions on bytes.
"""

from __future__ import annotations

import hashlib
import io
import struct
import zlib

import pillow_heif

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Text chunks carry nothing a variant keeps (XMP, comments, software names), and Pillow
# refuses the whole file when one inflates past PngImagePlugin.MAX_TEXT_CHUNK (1 MiB).
_PNG_TEXT = frozenset({b"tEXt", b"zTXt", b"iTXt"})
# An ICC profile that inflates past this is dropped (the pixels are then read as sRGB):
# the bound Pillow itself applies to a compressed profile (MAX_TEXT_CHUNK), kept as our
# own constant so that a change of Pillow's global cannot change what we accept.
MAX_ICC_BYTES = 1024 * 1024


def prune_png(data: bytes) -> bytes:
    """``data`` without the PNG chunks that would stop Pillow over metadata: every text
    chunk (tEXt, zTXt, iTXt), an iCCP profile that does not inflate or inflates past
    ``MAX_ICC_BYTES``, and any ancillary chunk whose CRC is wrong. Critical chunks (IHDR,
    PLTE, IDAT, IEND) and the rest are kept byte for byte; when nothing is dropped the same
    object is returned. A chunk whose length runs past the end stops the walk, leaving the
    rest for the decoder to judge (a truncated file stays truncated)."""
    if not data.startswith(PNG_SIGNATURE):
        return data
    drop: list[tuple[int, int]] = []
    pos = len(PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        end = pos + 12 + length
        if end > len(data) or kind == b"IEND":
            break
        ancillary = bool(kind[0] & 0x20)
        broken = ancillary and not _crc_ok(data, pos, length)
        if kind in _PNG_TEXT or broken or (kind == b"iCCP" and not _icc_fits(data, pos, length)):
            drop.append((pos, end))
        pos = end
    if not drop:
        return data
    parts, start = [], 0
    for begin, end in drop:
        parts.append(data[start:begin])
        start = end
    parts.append(data[start:])
    return b"".join(parts)


def _crc_ok(data: bytes, pos: int, length: int) -> bool:
    body = memoryview(data)[pos + 4 : pos + 8 + length]
    stored = int.from_bytes(data[pos + 8 + length : pos + 12 + length], "big")
    return zlib.crc32(body) & 0xFFFFFFFF == stored


def _icc_fits(data: bytes, pos: int, length: int) -> bool:
    """iCCP: name, NUL, method 0, then a zlib stream (PNG 1.2, 4.2.2.4)."""
    body = data[pos + 8 : pos + 8 + length]
    name_end = body.find(b"\0", 0, 80)
    if name_end < 1 or name_end + 2 > len(body) or body[name_end + 1] != 0:
        return False
    inflater = zlib.decompressobj()
    try:
        inflater.decompress(body[name_end + 2 :], MAX_ICC_BYTES)
    except zlib.error:
        return False
    return len(inflater.unconsumed_tail) == 0


def read_size(data: bytes) -> tuple[int, int] | None:
    """The primary image's (width, height) in an AVIF or HEIF container, from its boxes
    (libheif through pillow-heif, no decoding), or None when they cannot be parsed."""
    try:
        heif = pillow_heif.open_heif(io.BytesIO(data), convert_hdr_to_8bit=True)
        width, height = heif.size
    except Exception:  # any parse failure: nothing known
        return None
    return int(width), int(height)


# JPEG markers (ITU-T T.81 table B.1).
EOI = b"\xff\xd9"
_SOS = 0xDA
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # DHT, JPG and DAC are not frames
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM, RST0..7

# Bytes that differ from the zero bits libjpeg inserts when it meets a marker mid-scan:
# eight one bits (0xFF stuffed as FF 00), then hash output as noise (0xFF never occurs, so
# no marker is formed). Decoded as scan data they give different coefficients.
SCAN_PROBE = b"\xff\x00" + bytes(
    min(byte, 0xFE) for byte in hashlib.sha256(b"mediajobs scan probe").digest() * 16
)


def jpeg_scans_cover_every_coefficient(data: bytes) -> bool:
    """Whether the scans the file starts (SOS headers, T.81 B.2.3) give every component of
    its frame all 64 coefficients at full precision (successive approximation Al = 0).
    False when a progressive (or non-interleaved sequential) file stops before a scan it
    still needed, or when the markers cannot be walked. It does not tell whether the last
    scan's data is complete; the pipeline checks that by decoding."""
    components: list[int] = []
    covered: dict[int, set[int]] = {}
    pos = 2
    size = len(data)
    while pos + 4 <= size:
        if data[pos] != 0xFF:
            return False
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _STANDALONE:
            pos += 2
            continue
        if marker == EOI[1]:
            break
        (length,) = struct.unpack_from(">H", data, pos + 2)
        segment = data[pos + 4 : pos + 2 + length]
        if marker in _SOF and len(segment) >= 6:
            count = segment[5]
            components = [segment[6 + 3 * i] for i in range(count) if 8 + 3 * i < len(segment)]
        elif marker == _SOS and segment:
            count = segment[0]
            if len(segment) < 1 + 2 * count + 3:
                return False
            ids = [segment[1 + 2 * i] for i in range(count)]
            start, end, approximation = segment[1 + 2 * count : 4 + 2 * count]
            if approximation & 0x0F == 0:
                for component in ids:
                    covered.setdefault(component, set()).update(range(start, min(end, 63) + 1))
            pos = _after_scan(data, pos + 2 + length)
            continue
        pos += 2 + length
    full = set(range(64))
    return bool(components) and all(covered.get(c, set()) >= full for c in components)


def _after_scan(data: bytes, pos: int) -> int:
    """The offset of the first marker after the entropy-coded data starting at ``pos``
    (stuffed FF 00 and restart markers belong to the data), or the end of ``data``."""
    while True:
        pos = data.find(b"\xff", pos)
        if pos < 0 or pos + 1 >= len(data):
            return len(data)
        following = data[pos + 1]
        if following == 0 or 0xD0 <= following <= 0xD7 or following == 0xFF:
            pos += 1 if following == 0xFF else 2
            continue
        return pos
