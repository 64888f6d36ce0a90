"""The site policy: one row of live limits, read at the start of every job (and by the API on
every check), so a change applies without a restart."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from mediajobs.db.pool import Pool
from mediajobs.errors import MediaJobsError
from mediajobs.imaging.policy import ImagePolicy, VariantSpec

# The imaging defaults are the policy's defaults: one home for each number.
_IMAGING = ImagePolicy()


class PolicyInvalid(MediaJobsError, ValueError):
    """A policy change that would not make sense; names the field (``policy`` when the
    fields only make no sense together)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True)
class SitePolicy:
    """The live site policy, as its row holds it. Field types and ranges of a change are the
    API's business (``service/models.py`` ``SitePolicyUpdate``); ``validate`` checks that
    the fields make sense together."""

    max_batch_size: int = 20
    max_source_bytes: int = _IMAGING.max_bytes
    min_width: int = _IMAGING.min_width
    min_height: int = _IMAGING.min_height
    min_aspect_ratio: float = _IMAGING.min_aspect
    max_aspect_ratio: float = _IMAGING.max_aspect
    max_megapixels: float = _IMAGING.max_megapixels
    undo_window_seconds: int = 30
    photo_review_enabled: bool = False
    photo_review_provider: str = "disabled"
    variants: tuple[VariantSpec, ...] = _IMAGING.variants
    webp_quality: int = _IMAGING.quality
    webp_method: int = _IMAGING.method
    updated_at: datetime | None = None
    updated_by: str | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> SitePolicy:
        values = {f.name: row[f.name] for f in dataclasses.fields(cls) if f.name in row}
        values["variants"] = tuple(VariantSpec(v["name"], int(v["size"])) for v in row["variants"])
        return cls(**values)

    def image_policy(self) -> ImagePolicy:
        return ImagePolicy(
            max_bytes=self.max_source_bytes,
            min_width=self.min_width,
            min_height=self.min_height,
            min_aspect=self.min_aspect_ratio,
            max_aspect=self.max_aspect_ratio,
            max_megapixels=self.max_megapixels,
            variants=self.variants,
            quality=self.webp_quality,
            method=self.webp_method,
        )

    def validate(self) -> SitePolicy:
        """This policy, when imaging can work to it and some image can pass it; else
        ``PolicyInvalid("policy")``. An image passes when it is at least ``min_width`` by
        ``min_height``, its width / height is within the aspect range, and it has at most
        ``max_megapixels`` million pixels: a policy whose minimums need more pixels than
        the cap allows, at any allowed aspect ratio, refuses every upload."""
        try:
            images = self.image_policy()
        except ValueError as exc:
            raise PolicyInvalid("policy", str(exc)) from None
        least = self.min_width * self.min_height
        if least > images.max_pixels:
            raise PolicyInvalid(
                "policy",
                f"minWidth x minHeight is {least} pixels, more than maxMegapixels "
                f"({self.max_megapixels:g}) allows: no image could pass",
            )
        smallest = self.least_pixels()
        if smallest > images.max_pixels * (1 + 1e-9):  # float noise is no refusal
            raise PolicyInvalid(
                "policy",
                f"within the aspect-ratio range {self.min_aspect_ratio:g}.."
                f"{self.max_aspect_ratio:g} an image of at least {self.min_width} x "
                f"{self.min_height} has "
                f"{smallest:.0f}+ pixels, more than maxMegapixels ({self.max_megapixels:g}) "
                "allows: no image could pass",
            )
        return self

    def least_pixels(self) -> float:
        """The fewest pixels an image that meets the minimum sides and the aspect range can
        have (sides taken as real numbers: whole pixels need at least this many). At aspect
        ``r`` the least is ``max(r * min_height**2, min_width**2 / r)``, smallest at ``r =
        min_width / min_height`` brought into the range."""
        ratio = min(
            max(self.min_width / self.min_height, self.min_aspect_ratio), self.max_aspect_ratio
        )
        return max(ratio * self.min_height**2, self.min_width**2 / ratio)


# The columns a change may set: every field but the bookkeeping.
EDITABLE = tuple(
    f.name for f in dataclasses.fields(SitePolicy) if f.name not in ("updated_at", "updated_by")
)
_COLUMNS = [*EDITABLE, "updated_by"]


def _variants(value: Any) -> tuple[VariantSpec, ...]:
    """Variant specs from specs or ``{name, size}`` mappings."""
    try:
        return tuple(
            v if isinstance(v, VariantSpec) else VariantSpec(v["name"], v["size"]) for v in value
        )
    except ValueError as exc:
        raise PolicyInvalid("variants", str(exc)) from None


class SitePolicies:
    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    async def load(self) -> SitePolicy:
        async with self._pool.connection() as conn:
            cursor = await conn.execute("SELECT * FROM site_policies WHERE name = 'default'")
            row = await cursor.fetchone()
        return SitePolicy() if row is None else SitePolicy.from_row(row)

    async def update(self, changes: Mapping[str, Any], *, by: str | None = None) -> SitePolicy:
        """Apply ``changes`` (field names of ``SitePolicy``, values of their types) after
        validating the whole result."""
        unknown = set(changes) - set(EDITABLE)
        if unknown:
            raise PolicyInvalid(sorted(unknown)[0], "is not a policy field")
        values = dict(changes)
        if "variants" in values:
            values["variants"] = _variants(values["variants"])
        current = await self.load()
        policy = dataclasses.replace(current, **values, updated_by=by).validate()
        values = {name: getattr(policy, name) for name in _COLUMNS}
        values["variants"] = Jsonb([{"name": v.name, "size": v.size} for v in policy.variants])
        columns = ", ".join(_COLUMNS)
        placeholders = ", ".join(f"%({name})s" for name in _COLUMNS)
        assignments = ", ".join(f"{name} = EXCLUDED.{name}" for name in _COLUMNS)
        async with self._pool.connection() as conn:
            try:
                cursor = await conn.execute(
                    f"INSERT INTO site_policies (name, {columns}) VALUES ('default', "
                    f"{placeholders}) ON CONFLICT (name) DO UPDATE SET {assignments}, "
                    "updated_at = now() RETURNING *",
                    values,
                )
            except psycopg.errors.CheckViolation as exc:  # a bound validate() does not know
                constraint = exc.diag.constraint_name or "a check"
                raise PolicyInvalid("policy", f"refused by {constraint}") from None
            row = await cursor.fetchone()
        assert row is not None
        return SitePolicy.from_row(row)
