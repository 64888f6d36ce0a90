"""What an upload really is: the format sniffed from its bytes.

The bytes decide. Bytes of an accepted format are accepted whatever the file name or the
declared content type say (phone apps export JPEG bytes named ``IMG_0001.HEIC``); the
item's file name then gets the extension of what the bytes are (``corrected_filename``).
Only bytes of no accepted format are refused (``unsupported_type``).
"""

from __future__ import annotations

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

# The extension an item's file name gets for each accepted type (the first of EXTENSIONS).
CANONICAL_EXTENSIONS = {
    JPEG: ".jpg",
    PNG: ".png",
    WEBP: ".webp",
    HEIC: ".heic",
    HEIF: ".heif",
    AVIF: ".avif",
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
    """The type of ``data``, sniffed from its bytes: one of ``ACCEPTED_TYPES``.

    The declared content type and the file name never refuse an upload (a JPEG named
    ``.HEIC`` or declared ``image/png`` is a JPEG); they only make the message of a refusal
    say what the client claimed. Raises ``ImageRejected("unsupported_type")`` when the
    bytes are of no accepted format (GIF, BMP, SVG, text, unrecognised)."""
    detected = sniff(data)
    if detected in ACCEPTED_TYPES:
        assert detected is not None
        return detected
    raise unsupported(detected, declared_type, filename, ACCEPTED_TYPES, "an accepted image type")


def unsupported(
    detected: str | None,
    declared_type: str | None,
    filename: str | None,
    accepted: tuple[str, ...],
    what: str,
) -> ImageRejected:
    """``ImageRejected("unsupported_type")`` for bytes sniffed as ``detected`` (None: no
    known format), saying what the client claimed (``declared_type``, ``filename``) and
    which types ``accepted`` holds; ``what`` names them ("an accepted image type")."""
    claimed = [f"declared {normalize_type(declared_type)}"] if normalize_type(declared_type) else []
    if filename:
        claimed.append(f"named {filename!r}")
    said = f" ({', '.join(claimed)})" if claimed else ""
    return ImageRejected(
        "unsupported_type",
        f"the bytes are {detected or 'of no image format we know'}{said}, not {what}"
        f" (accepted: {', '.join(accepted)})",
    )


def corrected_filename(name: str, detected: str) -> str:
    """``name`` with the extension of what its bytes are: kept when it already names that
    type (``.jpeg``, ``.JPG`` stay for JPEG; ``.heif`` stays for HEIC: one family),
    replaced when it names another image type (``IMG_0001.HEIC`` with JPEG bytes ->
    ``IMG_0001.jpg``), appended otherwise (``IMG_0001`` -> ``IMG_0001.jpg``,
    ``scan.v2`` -> ``scan.v2.jpg``). ``detected`` is one of ``ACCEPTED_TYPES``; raises
    ``KeyError`` for others."""
    canonical = CANONICAL_EXTENSIONS[detected]
    stem, dot, ext = name.rpartition(".")
    by_name = EXTENSIONS.get(f".{ext.lower()}") if dot else None
    if by_name is None:
        return name + canonical
    if _same(by_name, detected):
        return name
    return stem + canonical
