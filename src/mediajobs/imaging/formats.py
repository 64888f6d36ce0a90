"""What an upload really is: the format sniffed from its bytes, checked against what the
client declared (its content type and its file name's extension).

The bytes decide. A specific declared image type must agree with them; an empty or generic
one (browsers often send none, or ``application/octet-stream``, for HEIC) is accepted and
replaced by the sniffed type.
"""

from __future__ import annotations

import posixpath

from mediajobs.errors import ImageRejected

JPEG = "image/jpeg"
PNG = "image/png"
WEBP = "image/webp"
HEIC = "image/heic"
HEIF = "image/heif"
AVIF = "image/avif"
GIF = "image/gif"

ACCEPTED_TYPES: tuple[str, ...] = (JPEG, PNG, WEBP, HEIC, HEIF, AVIF)

# Declared types that say nothing about the format.
GENERIC_TYPES = frozenset(
    {"", "application/octet-stream", "binary/octet-stream", "application/unknown", "image/*"}
)

# Names clients use for the same format.
_ALIASES = {
    "image/jpg": JPEG,
    "image/pjpeg": JPEG,
    "image/x-png": PNG,
    "image/apng": PNG,
    "image/heic-sequence": HEIC,
    "image/heif-sequence": HEIF,
    "image/avif-sequence": AVIF,
}

# HEIC and HEIF are one container family: a ".heif" file holding HEVC, or a ".heic"
# labelled image/heif, is the same thing to every decoder.
_FAMILY = {HEIC: HEIF, HEIF: HEIF}

EXTENSIONS = {
    ".jpg": JPEG,
    ".jpeg": JPEG,
    ".jpe": JPEG,
    ".jfif": JPEG,
    ".png": PNG,
    ".apng": PNG,
    ".webp": WEBP,
    ".heic": HEIC,
    ".heics": HEIC,
    ".heif": HEIF,
    ".heifs": HEIF,
    ".hif": HEIF,
    ".avif": AVIF,
    ".avifs": AVIF,
    ".gif": GIF,
    ".bmp": "image/bmp",
    ".tif": "image/tiff",
    ".tiff": "image/tiff",
    ".svg": "image/svg+xml",
}

_HEIC_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs"}
_AVIF_BRANDS = {b"avif", b"avis"}
_HEIF_BRANDS = {b"mif1", b"msf1", b"mif2", b"miaf"}


def normalize_type(content_type: str | None) -> str:
    """``"Image/JPG; charset=x"`` -> ``"image/jpeg"``; generic types -> ``""``."""
    value = (content_type or "").split(";", 1)[0].strip().lower()
    if value in GENERIC_TYPES:
        return ""
    return _ALIASES.get(value, value)


def sniff(data: bytes | memoryview) -> str | None:
    """The image type the bytes start with, or None when they are none we know."""
    head = bytes(data[:64])
    if head.startswith(b"\xff\xd8\xff"):
        return JPEG
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return WEBP
    if head.startswith((b"GIF87a", b"GIF89a")):
        return GIF
    if head[4:8] == b"ftyp":
        return _sniff_isobmff(head)
    return None


def _sniff_isobmff(head: bytes) -> str | None:
    size = int.from_bytes(head[0:4], "big")
    major = head[8:12]
    end = min(max(size, 16), len(head))
    brands = {major} | {head[i : i + 4] for i in range(16, end - 3, 4)}
    if major in _AVIF_BRANDS or (major not in _HEIC_BRANDS and brands & _AVIF_BRANDS):
        return AVIF
    if brands & _HEIC_BRANDS:
        return HEIC
    if brands & _HEIF_BRANDS:
        return HEIF
    return None


def _same(a: str, b: str) -> bool:
    return _FAMILY.get(a, a) == _FAMILY.get(b, b)


def detect_type(
    data: bytes | memoryview, declared_type: str | None = None, filename: str | None = None
) -> str:
    """The sniffed type of ``data``, after checking it against the declared content type and
    the file name's extension. Raises ``ImageRejected`` with ``unsupported_type`` (bytes of
    no accepted format) or ``type_mismatch`` (a specific declaration the bytes contradict)."""
    detected = sniff(data)
    declared = normalize_type(declared_type)
    if detected is None or detected not in ACCEPTED_TYPES:
        what = detected or "unrecognised bytes"
        raise ImageRejected(
            "unsupported_type",
            f"{what} is not an accepted image type (accepted: {', '.join(ACCEPTED_TYPES)})",
        )
    if declared and not _same(declared, detected):
        raise ImageRejected("type_mismatch", f"declared as {declared} but the bytes are {detected}")
    ext = posixpath.splitext((filename or "").lower())[1]
    by_name = EXTENSIONS.get(ext)
    if by_name is not None and not _same(by_name, detected):
        raise ImageRejected(
            "type_mismatch", f"the file name ends in {ext} but the bytes are {detected}"
        )
    return detected
