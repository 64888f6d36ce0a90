"""The derivatives of a bulk ingest, as a profile (``CatalogProfile``).

STAND-IN from the "policy" helper's branch: only the profile values of the contract
(``WatermarkSpec``, ``CatalogProfile`` with ``from_json`` / ``to_json``), so the site policy
can be built and tested. The "imaging" helper's module (``make_catalog`` and the rest) is
the one to keep; this file is not to be merged over it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from mediajobs.errors import InvalidKey
from mediajobs.storage.base import Locator
from mediajobs.storage.keys import check_segment, validate_key
from mediajobs.types import JSON

S = TypeVar("S", "WatermarkSpec", "CatalogProfile")

# The same names and values as the imaging helper's module (the API's bounds import them).
QUALITY = (1, 100)  # WebP and JPEG quality, Pillow's scale
MAX_SOURCE_BYTES = 1 << 30  # the bytes are held whole by the worker and the imaging process
MAX_MEGAPIXELS = 2 * 89_478_485 / 1e6  # Pillow's hard decompression-bomb limit


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _number(name: str, value: Any, low: float, high: float, *, above: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name}: must be a finite number")
    if (value <= low if above else value < low) or value > high:
        bound = f"above {low:g}" if above else f"at least {low:g}"
        raise ValueError(f"{name}: must be {bound} and at most {high:g}")
    return float(value)


def _integer(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name}: must be an integer")
    if not low <= value <= high:
        raise ValueError(f"{name}: must be {low}..{high}")
    return value


@dataclass(frozen=True, slots=True)
class WatermarkSpec:
    """The tiled watermark of a preview: ``text`` (1-100 characters) at ``opacity`` (0 < o
    <= 1), rotated by ``angle`` degrees (-90..90), ``size`` the text height as a fraction of
    the preview's long edge (0.01-0.5); ``logo`` a store locator of a PNG, optional."""

    text: str = "mediajobs"
    opacity: float = 0.35
    angle: float = 30.0
    size: float = 0.04
    logo: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.text, str) or not 1 <= len(self.text) <= 100:
            raise ValueError("text: must be 1..100 characters")
        _number("opacity", self.opacity, 0.0, 1.0, above=True)
        _number("angle", self.angle, -90.0, 90.0)
        _number("size", self.size, 0.01, 0.5)
        if self.logo is not None:
            try:
                validate_key(Locator.parse(self.logo).key)
            except (InvalidKey, AttributeError):
                raise ValueError("logo: must be a store locator, provider://bucket/key") from None

    @classmethod
    def from_json(cls, value: Mapping[str, JSON]) -> WatermarkSpec:
        """A spec from camelCase keys, any subset; ``ValueError("field: reason")``."""
        return _from_json(cls, value)


@dataclass(frozen=True, slots=True)
class CatalogProfile:
    """What a bulk ingest makes of each image: a WebP thumbnail that fits inside
    ``thumbnail_size`` squared (aspect kept), a JPEG preview of long edge ``preview_size``
    with the watermark, under keys starting with ``prefix``; sources over ``max_bytes`` or
    ``max_megapixels`` fail."""

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
            raise ValueError("prefix: must be one key segment") from None
        _integer("thumbnailSize", self.thumbnail_size, 16, 8192)
        _integer("thumbnailQuality", self.thumbnail_quality, *QUALITY)
        _integer("previewSize", self.preview_size, 16, 8192)
        _integer("previewQuality", self.preview_quality, *QUALITY)
        _integer("maxBytes", self.max_bytes, 1, MAX_SOURCE_BYTES)
        _number("maxMegapixels", self.max_megapixels, 0.0, MAX_MEGAPIXELS, above=True)

    @classmethod
    def from_json(cls, value: Mapping[str, JSON]) -> CatalogProfile:
        """A profile from camelCase keys, any subset (the rest default);
        ``ValueError("field: reason")`` on a bad field or an unknown key."""
        return _from_json(cls, value)

    def to_json(self) -> dict[str, JSON]:
        """Every field, camelCase (the watermark as an object)."""
        out: dict[str, JSON] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, WatermarkSpec):
                value = {_camel(w.name): getattr(value, w.name) for w in dataclasses.fields(value)}
            out[_camel(f.name)] = value
        return out


def _from_json(cls: type[S], value: Mapping[str, JSON]) -> S:
    if not isinstance(value, Mapping):
        raise ValueError("profile: must be an object")
    names = {_camel(f.name): f.name for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for key, item in value.items():
        if key not in names:
            raise ValueError(f"{key}: is not a known field")
        if names[key] == "watermark":
            try:
                item = WatermarkSpec.from_json(item)
            except ValueError as exc:
                raise ValueError(f"watermark.{exc}") from None
        values[names[key]] = item
    return cls(**values)
