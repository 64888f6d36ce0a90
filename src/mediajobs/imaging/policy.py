"""The limits and outputs imaging works to. The handler builds one from the live site
policy (``db/policies.py``); imaging itself never reads the database."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

VARIANT_NAME_PATTERN = r"^[a-z][a-z0-9_]{0,31}$"
VARIANT_SIZES = (16, 8192)  # pixels: the least and the most a variant's long edge may be
_NAME = re.compile(VARIANT_NAME_PATTERN)


@dataclass(frozen=True, slots=True)
class VariantSpec:
    """One output: a WebP whose long edge is at most ``size`` pixels (never upscaled)."""

    name: str
    size: int

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"variant name {self.name!r}: lowercase letters, digits, _")
        low, high = VARIANT_SIZES
        if not low <= self.size <= high:
            raise ValueError(f"variant {self.name}: size must be {low}..{high} pixels")


DEFAULT_VARIANTS: tuple[VariantSpec, ...] = (
    VariantSpec("thumb", 320),
    VariantSpec("card", 640),
    VariantSpec("preview", 1024),
    VariantSpec("detail", 1600),
    VariantSpec("detail_xl", 2560),
)


@dataclass(frozen=True, slots=True)
class ImagePolicy:
    """Limits checked from the header before any decode, and the variant set."""

    max_bytes: int = 30 * 1024 * 1024
    min_width: int = 200
    min_height: int = 200
    min_aspect: float = 0.25  # width / height
    max_aspect: float = 4.0
    max_megapixels: float = 60.0
    variants: tuple[VariantSpec, ...] = field(default=DEFAULT_VARIANTS)
    quality: int = 80  # WebP quality 0..100
    method: int = 4  # WebP effort 0 (fast) .. 6 (small)
    blur_size: int = 16  # long edge of the blurDataURL placeholder

    def __post_init__(self) -> None:
        if not self.variants:
            raise ValueError("at least one variant is required")
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError("variant names must be unique")
        if not 0 <= self.quality <= 100:
            raise ValueError("quality must be 0..100")
        if not 0 <= self.method <= 6:
            raise ValueError("method must be 0..6")
        if self.max_bytes < 1 or self.min_width < 1 or self.min_height < 1:
            raise ValueError("byte and size limits must be positive")
        if not 0 < self.min_aspect <= self.max_aspect:
            raise ValueError("aspect-ratio range must satisfy 0 < min <= max")
        if self.max_megapixels <= 0:
            raise ValueError("the megapixel cap must be positive")

    @property
    def max_pixels(self) -> int:
        return int(self.max_megapixels * 1_000_000)

    def ordered_variants(self) -> tuple[VariantSpec, ...]:
        """Largest first: each variant is resized from the one before it."""
        return tuple(sorted(self.variants, key=lambda v: v.size, reverse=True))
