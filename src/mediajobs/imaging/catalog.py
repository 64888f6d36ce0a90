"""Catalog derivatives for bulk ingest: bytes in, a thumbnail and a watermarked preview out.
Pure: no I/O beyond the bytes given.

The upload pipeline's code does the reading (``pipeline.probe``, ``_decode``, ``_to_srgb``,
``_resize_to``, ``exif.extract_exif``): the same sniffing, header checks before any decode,
EXIF orientation, 16-bit, CMYK and ICC conversion to sRGB. The catalog differs in what it
accepts and makes:

- TIFF is read too (the first page of a multi-page file); every upload type stays accepted.
- No minimum size or aspect ratio (a migrated library has small images); the profile's
  ``max_bytes`` and ``max_megapixels`` apply.
- The thumbnail is a WebP that fits inside ``thumbnail_size`` x ``thumbnail_size``: the
  aspect is kept and nothing is cropped (the seed's "aspect-ratio preserved"), never
  upscaled; alpha is kept.
- The preview is a JPEG whose long edge is ``preview_size`` (never upscaled), alpha flattened
  on white, with the tiled watermark of ``imaging.watermark`` over all of it.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

from PIL import Image

from mediajobs.errors import ImageRejected, InvalidKey
from mediajobs.imaging.exif import extract_exif
from mediajobs.imaging.formats import ACCEPTED_TYPES, sniff, unsupported
from mediajobs.imaging.pipeline import (
    TIFF,
    _clean,
    _decode,
    _encode,
    _resize_to,
    _to_srgb,
    blur_data_url,
    fit,
    probe,
)
from mediajobs.imaging.policy import VARIANT_SIZES, ImagePolicy, VariantSpec
from mediajobs.imaging.watermark import WatermarkLogoInvalid, WatermarkSpec, apply_watermark
from mediajobs.storage.keys import check_segment
from mediajobs.types import JSON

__all__ = [
    "CATALOG_TYPES",
    "CatalogImage",
    "CatalogProfile",
    "Derivative",
    "WatermarkLogoInvalid",
    "WatermarkSpec",
    "make_catalog",
]

CATALOG_TYPES: tuple[str, ...] = (*ACCEPTED_TYPES, TIFF)
# TIFF's byte-order marks and version (42; 43 is BigTIFF), TIFF 6.0 section 2 and the
# BigTIFF design note; Pillow reads both.
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
QUALITY = (1, 100)  # WebP and JPEG quality, Pillow's scale
MAX_SOURCE_BYTES = 1 << 30  # the bytes are held whole by the worker and the imaging process
MIN_SOURCE_BYTES = 1024  # the upload policy's floor (site_policies.max_source_bytes)
MIN_MEGAPIXELS = 0.01  # the upload policy's floor (site_policies.max_megapixels)
# Pillow's hard decompression-bomb limit (twice Image.MAX_IMAGE_PIXELS, 179 MP): a file
# past it is refused before any decode whatever the profile says, so no cap goes higher.
MAX_MEGAPIXELS = 2 * 89_478_485 / 1e6
_WEBP_METHOD = 4  # libwebp effort, the upload pipeline's default (ImagePolicy.method)
_BLUR_SIZE = 16  # long edge of the blur placeholder, as for uploads (ImagePolicy.blur_size)
_WHITE = (255, 255, 255)
_CAMEL = re.compile(r"_([a-z])")


def _camel(name: str) -> str:
    return _CAMEL.sub(lambda match: match.group(1).upper(), name)


@dataclass(frozen=True, slots=True)
class CatalogProfile:
    """The derivatives a bulk ingest makes, and the limits of the files it accepts.

    ``prefix``: the object-key prefix, one key segment (ASCII letters, digits, ``._-``,
    1..128, ``storage.keys.check_segment``). ``thumbnail_size``: the WebP thumbnail fits
    inside ``thumbnail_size`` x ``thumbnail_size`` pixels, aspect kept, never upscaled
    (16..8192, the upload variants' range). ``thumbnail_quality``, ``preview_quality``: WebP
    and JPEG quality, 1..100. ``preview_size``: the long edge of the watermarked JPEG
    preview, pixels, never upscaled (16..8192). ``watermark``: ``WatermarkSpec``.
    ``max_bytes``: a larger source file fails ``file_too_large`` (1 KiB .. 1 GiB).
    ``max_megapixels``: a source with more pixels fails ``too_many_pixels`` (0.01 .. 178.9,
    Pillow's hard bomb limit). Raises ``ValueError("field: reason")`` (JSON field names,
    camelCase) on a bad value."""

    prefix: str = "catalog"
    thumbnail_size: int = 300
    thumbnail_quality: int = 75
    preview_size: int = 1200
    preview_quality: int = 85
    watermark: WatermarkSpec = field(default_factory=WatermarkSpec)
    max_bytes: int = 200 * 1024 * 1024
    max_megapixels: float = 100.0

    def __post_init__(self) -> None:
        try:
            check_segment(self.prefix, "prefix")
        except InvalidKey:
            raise ValueError(
                "prefix: must be one key segment (ASCII letters, digits, '._-', 1..128,"
                " starting with a letter or digit)"
            ) from None
        for name in ("thumbnail_size", "preview_size"):
            _check_int(_camel(name), getattr(self, name), VARIANT_SIZES)
        for name in ("thumbnail_quality", "preview_quality"):
            _check_int(_camel(name), getattr(self, name), QUALITY)
        if not isinstance(self.watermark, WatermarkSpec):
            raise ValueError("watermark: must be a WatermarkSpec")
        _check_int("maxBytes", self.max_bytes, (MIN_SOURCE_BYTES, MAX_SOURCE_BYTES))
        megapixels = self.max_megapixels
        if (
            not isinstance(megapixels, int | float)
            or isinstance(megapixels, bool)
            or not MIN_MEGAPIXELS <= megapixels <= MAX_MEGAPIXELS
        ):
            raise ValueError(
                f"maxMegapixels: must be a number, {MIN_MEGAPIXELS:g} <= maxMegapixels <= "
                f"{MAX_MEGAPIXELS:g}"
            )

    @classmethod
    def from_json(cls, value: Mapping[str, JSON]) -> CatalogProfile:
        """A profile from its JSON form (camelCase keys, any subset; the rest default),
        e.g. ``{"thumbnailSize": 256, "watermark": {"text": "ACME", "opacity": 0.5}}``.
        Raises ``ValueError("field: reason")`` for a bad value, a wrong JSON type or an
        unknown key (``watermark.opacity: ...`` for the watermark's fields)."""
        kwargs = _fields_from_json(cls, value, "")
        if "watermark" in kwargs:
            kwargs["watermark"] = _watermark_from_json(kwargs["watermark"])
        return cls(**kwargs)

    def to_json(self) -> dict[str, JSON]:
        """Every field, camelCase keys; ``from_json(p.to_json()) == p``."""
        out: dict[str, JSON] = {_camel(f.name): getattr(self, f.name) for f in fields(self)}
        out["watermark"] = {
            _camel(f.name): getattr(self.watermark, f.name) for f in fields(WatermarkSpec)
        }
        return out

    def probe_policy(self) -> ImagePolicy:
        """The upload pipeline's header checks with this profile's limits and no minimum
        size or aspect ratio."""
        return ImagePolicy(
            max_bytes=self.max_bytes,
            min_width=1,
            min_height=1,
            min_aspect=1e-9,  # a 1 x 1e9 strip is over any pixel cap anyway
            max_aspect=1e9,
            max_megapixels=self.max_megapixels,
            variants=(VariantSpec("preview", max(self.preview_size, self.thumbnail_size)),),
        )


def _check_int(name: str, value: object, bounds: tuple[int, int]) -> None:
    low, high = bounds
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ValueError(f"{name}: must be an integer, {low}..{high}")


# JSON types each field takes: the dataclass' own checks then give the range.
_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "prefix": (str,),
    "thumbnail_size": (int,),
    "thumbnail_quality": (int,),
    "preview_size": (int,),
    "preview_quality": (int,),
    "watermark": (Mapping,),
    "max_bytes": (int,),
    "max_megapixels": (int, float),
    "text": (str,),
    "opacity": (int, float),
    "angle": (int, float),
    "size": (int, float),
    "logo": (str, type(None)),
}
_JSON_NAMES = {"int": "an integer", "float": "a number", "str": "a string", "Mapping": "an object"}


def _fields_from_json(cls: type, value: object, path: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{path.rstrip('.') or 'profile'}: must be an object")
    names = {_camel(f.name): f.name for f in fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, item in value.items():
        name = names.get(key) if isinstance(key, str) else None
        if name is None:
            raise ValueError(f"{path}{key}: unknown field")
        allowed = _JSON_TYPES[name]
        if isinstance(item, bool) or not isinstance(item, allowed):
            wanted = " or ".join(_JSON_NAMES.get(t.__name__, "null") for t in allowed)
            raise ValueError(f"{path}{key}: must be {wanted}")
        kwargs[name] = item
    return kwargs


def _watermark_from_json(value: object) -> WatermarkSpec:
    kwargs = _fields_from_json(WatermarkSpec, value, "watermark.")
    try:
        return WatermarkSpec(**kwargs)
    except ValueError as exc:
        raise ValueError(f"watermark.{exc}") from None


@dataclass(frozen=True, slots=True)
class Derivative:
    """One encoded derivative: its pixel size and bytes; ``content_type`` is
    ``image/webp`` (thumbnail) or ``image/jpeg`` (preview)."""

    width: int
    height: int
    data: bytes
    content_type: str


@dataclass(frozen=True, slots=True)
class CatalogImage:
    """What ``make_catalog`` made of one source file. ``width``/``height``: upright pixels
    (EXIF orientation applied); ``source_bytes``: the file's length; ``sha256``: hex of its
    bytes; ``frames``: pages or frames in the file (only the first is used); ``exif``: as
    for uploads (``exif.extract_exif``); ``gps``: kept apart (private) or None;
    ``taken_at``: EXIF DateTimeOriginal (else DateTime), aware when EXIF gives an offset,
    naive otherwise, None when absent; ``blur_data_url``: a WebP data URL of at most 1 KB."""

    detected_type: str
    width: int
    height: int
    source_bytes: int
    sha256: str
    frames: int
    exif: dict[str, JSON]
    gps: dict[str, JSON] | None
    taken_at: datetime | None
    thumbnail: Derivative
    preview: Derivative
    blur_data_url: str


def detect_catalog_type(
    data: bytes | memoryview, declared_type: str | None = None, filename: str | None = None
) -> str:
    """The type of ``data`` from its bytes: one of ``CATALOG_TYPES`` (the upload types and
    TIFF). Raises ``ImageRejected("unsupported_type")`` naming what the bytes are and what
    the file was called."""
    if bytes(data[:4]) in _TIFF_MAGIC:
        return TIFF
    detected = sniff(data)
    if detected in ACCEPTED_TYPES:
        assert detected is not None
        return detected
    raise unsupported(detected, declared_type, filename, CATALOG_TYPES, "a catalog image type")


def make_catalog(
    data: bytes,
    profile: CatalogProfile,
    *,
    filename: str | None = None,
    logo: bytes | None = None,
    threads: int | None = None,
) -> CatalogImage:
    """Validate ``data`` against ``profile`` from its header, decode once (the first page or
    frame; JPEG shrink-on-load), orient, convert to sRGB, and make the thumbnail (WebP) and
    the watermarked preview (JPEG). ``filename`` only names the file in messages. ``logo``:
    the bytes of the watermark's logo (None: text only). ``threads``: more than 1 encodes
    the thumbnail while the preview is watermarked and encoded.

    Raises ``ImageRejected`` with the upload codes: ``empty_file``, ``file_too_large``,
    ``unsupported_type`` (also a colour mode that cannot be converted), ``corrupt_image``,
    ``too_many_pixels``; and ``WatermarkLogoInvalid`` when ``logo`` cannot be used."""
    found, image = probe(
        data, profile.probe_policy(), filename=filename, detect=detect_catalog_type
    )
    exif, gps = extract_exif(image)
    decoded = _decode(image, found, max(profile.preview_size, profile.thumbnail_size), data)
    try:
        current = _to_srgb(decoded, data)
    except (ValueError, OSError) as exc:
        raise ImageRejected(
            "unsupported_type", f"the colour mode {decoded.mode} cannot be converted ({exc})"
        ) from None
    del image, decoded  # the full-size decode goes once the first derivative is made

    preview_target = fit(found.width, found.height, profile.preview_size)
    thumbnail_target = fit(found.width, found.height, profile.thumbnail_size)
    # The larger derivative from the decode (orientation applied there), the other from it.
    if profile.preview_size >= profile.thumbnail_size:
        preview = _resize_to(current, preview_target, True, found.orientation)
        thumbnail = _resize_to(preview, thumbnail_target, False, found.orientation)
    else:
        thumbnail = _resize_to(current, thumbnail_target, True, found.orientation)
        preview = _resize_to(thumbnail, preview_target, False, found.orientation)
    del current

    pool = ThreadPoolExecutor(1, thread_name_prefix="webp") if (threads or 1) > 1 else None
    try:
        thumbnail_job: Future[bytes] | None = None
        if pool is not None:
            thumbnail_job = pool.submit(
                _encode, _clean(thumbnail), profile.thumbnail_quality, _WEBP_METHOD
            )
        preview_data = _encode_preview(preview, profile, logo)
        thumbnail_data = (
            thumbnail_job.result()
            if thumbnail_job is not None
            else _encode(_clean(thumbnail), profile.thumbnail_quality, _WEBP_METHOD)
        )
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    taken = exif.get("takenAt")
    return CatalogImage(
        detected_type=found.detected_type,
        width=found.width,
        height=found.height,
        source_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        frames=found.frames,
        exif=exif,
        gps=gps,
        taken_at=datetime.fromisoformat(taken) if isinstance(taken, str) else None,
        thumbnail=Derivative(*thumbnail.size, thumbnail_data, "image/webp"),
        preview=Derivative(*preview.size, preview_data, "image/jpeg"),
        blur_data_url=blur_data_url(thumbnail, _BLUR_SIZE),
    )


def _encode_preview(image: Image.Image, profile: CatalogProfile, logo: bytes | None) -> bytes:
    """Flatten on white, watermark, and encode as a baseline JPEG with no metadata (the
    pixels are sRGB, what a browser assumes without a profile)."""
    marked = apply_watermark(_flatten(image), profile.watermark, logo)
    buffer = io.BytesIO()
    marked.save(buffer, "JPEG", quality=profile.preview_quality)
    return buffer.getvalue()


def _flatten(image: Image.Image) -> Image.Image:
    """RGB: alpha composited over white, grey expanded."""
    if image.mode == "RGBA":
        background = Image.new("RGB", image.size, _WHITE)
        background.paste(image, mask=image.getchannel("A"))
        return background
    return image if image.mode == "RGB" else image.convert("RGB")
