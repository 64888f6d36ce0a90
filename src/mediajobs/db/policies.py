"""The site policy: one row of live limits, read at the start of every job (and by the API on
every check), so a change applies without a restart."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from mediajobs.db.pool import Pool
from mediajobs.errors import MediaJobsError
from mediajobs.imaging.catalog import CatalogProfile
from mediajobs.imaging.policy import ImagePolicy, VariantSpec
from mediajobs.types import JSON

# The imaging defaults are the policy's defaults: one home for each number.
_IMAGING = ImagePolicy()

# The ingest profile every policy has, with CatalogProfile's defaults unless overridden.
CATALOG_PROFILE = "catalog"
# An ingest profile's name: the CHECK on ingest_runs.profile (migration 0008).
PROFILE_NAME_PATTERN = r"^[a-z][a-z0-9_]{0,31}$"
MAX_INGEST_PROFILES = 16  # profiles one policy may hold: a bound, not a need
_PROFILE_NAME = re.compile(PROFILE_NAME_PATTERN)


class PolicyInvalid(MediaJobsError, ValueError):
    """A policy change that would not make sense; names the field (``policy`` when the
    fields only make no sense together)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.reason = message  # without the field's name


class UnknownProfile(PolicyInvalid):
    """An ingest profile the site policy does not have (``SitePolicy.ingest_profile``);
    ``name`` is the one asked for, the message lists the ones there are."""

    code = "unknown_profile"

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(
            "ingest_profiles", f"no ingest profile {name!r}; the site policy has {', '.join(known)}"
        )
        self.name = name


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
    # Name -> profile, as stored: ``catalog`` is there only when it was overridden (it
    # always exists: ``ingest_profile``). Not part of the hash (a dict is not hashable).
    ingest_profiles: Mapping[str, CatalogProfile] = field(default_factory=dict, hash=False)
    updated_at: datetime | None = None
    updated_by: str | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> SitePolicy:
        """The policy of a ``site_policies`` row. A stored ingest profile that
        ``CatalogProfile`` refuses (only a hand-written row can hold one: ``update`` stores
        what it checked) raises ``PolicyInvalid`` naming it, rather than being dropped."""
        values = {f.name: row[f.name] for f in dataclasses.fields(cls) if f.name in row}
        values["variants"] = tuple(VariantSpec(v["name"], int(v["size"])) for v in row["variants"])
        if "ingest_profiles" in row:
            values["ingest_profiles"] = _ingest_profiles(row["ingest_profiles"])
        return cls(**values)

    def ingest_profile(self, name: str) -> CatalogProfile:
        """The ingest profile ``name``: its stored fields, the rest ``CatalogProfile``'s
        defaults. ``catalog`` always exists (all defaults when not stored); any other name
        the policy does not hold raises ``UnknownProfile`` (a ``PolicyInvalid``)."""
        profile = self.ingest_profiles.get(name)
        if profile is not None:
            return profile
        if name == CATALOG_PROFILE:
            return CatalogProfile()
        raise UnknownProfile(name, sorted(self.all_ingest_profiles()))

    def all_ingest_profiles(self) -> dict[str, CatalogProfile]:
        """Every ingest profile by name, ``catalog`` included, sorted by name: what the
        admin view shows."""
        profiles = {CATALOG_PROFILE: CatalogProfile(), **self.ingest_profiles}
        return dict(sorted(profiles.items()))

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


def _ingest_profiles(value: Any) -> dict[str, CatalogProfile]:
    """Ingest profiles by name from profiles, or from ``{name: {camelCase overrides}}`` (the
    column's and the API's form, read by ``CatalogProfile.from_json``); a bad name, too many
    profiles or a field ``from_json`` refuses is ``PolicyInvalid("ingest_profiles", ...)``
    naming the profile (``catalog.watermark.opacity: ...``)."""
    if not isinstance(value, Mapping):
        raise PolicyInvalid("ingest_profiles", "must be an object of profiles by name")
    if len(value) > MAX_INGEST_PROFILES:
        raise PolicyInvalid("ingest_profiles", f"at most {MAX_INGEST_PROFILES} profiles")
    profiles: dict[str, CatalogProfile] = {}
    for name, profile in value.items():
        if not isinstance(name, str) or not _PROFILE_NAME.fullmatch(name):  # no "\n" at the end
            raise PolicyInvalid(
                "ingest_profiles", f"profile name {name!r}: must match {PROFILE_NAME_PATTERN}"
            )
        if isinstance(profile, CatalogProfile):
            profiles[name] = profile
            continue
        try:
            profiles[name] = CatalogProfile.from_json(profile)
        except ValueError as exc:
            raise PolicyInvalid("ingest_profiles", f"{name}.{exc}") from None
    return profiles


def _overrides(profile: CatalogProfile) -> dict[str, JSON]:
    """The fields of ``profile`` that differ from the defaults, camelCase (the watermark
    whole when any of it differs): what the column stores, so a default changed in code
    applies to every profile that did not override it."""
    default = CatalogProfile().to_json()
    return {key: value for key, value in profile.to_json().items() if default.get(key) != value}


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
        """Apply ``changes`` (field names of ``SitePolicy``, values of their types; the
        variants may be ``{name, size}`` mappings and the ingest profiles ``{name: {camelCase
        overrides}}``) after validating the whole result. ``ingest_profiles`` replaces every
        profile (a profile given with some fields takes the defaults for the rest); the
        column keeps only each profile's fields that differ from the defaults."""
        unknown = set(changes) - set(EDITABLE)
        if unknown:
            raise PolicyInvalid(sorted(unknown)[0], "is not a policy field")
        values = dict(changes)
        if "variants" in values:
            values["variants"] = _variants(values["variants"])
        if "ingest_profiles" in values:
            values["ingest_profiles"] = _ingest_profiles(values["ingest_profiles"])
        current = await self.load()
        policy = dataclasses.replace(current, **values, updated_by=by).validate()
        values = {name: getattr(policy, name) for name in _COLUMNS}
        values["variants"] = Jsonb([{"name": v.name, "size": v.size} for v in policy.variants])
        values["ingest_profiles"] = Jsonb(
            {name: _overrides(profile) for name, profile in policy.ingest_profiles.items()}
        )
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
