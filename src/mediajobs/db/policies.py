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
from mediajobs.imaging.policy import ImagePolicy, VariantSpec
from mediajobs.types import JSON

REVIEW_PROVIDERS = ("disabled", "webhook")


# Width / height bounds any policy may set: 100:1 is past every panorama a camera makes.
MIN_ASPECT_RATIO = 0.01
MAX_ASPECT_RATIO = 100.0


class PolicyInvalid(ValueError):
    """A policy change that would not make sense; names the field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True)
class SitePolicy:
    max_batch_size: int = 20
    max_source_bytes: int = 30 * 1024 * 1024
    min_width: int = 200
    min_height: int = 200
    min_aspect_ratio: float = 0.25
    max_aspect_ratio: float = 4.0
    max_megapixels: float = 60.0
    undo_window_seconds: int = 30
    photo_review_enabled: bool = False
    photo_review_provider: str = "disabled"
    variants: tuple[VariantSpec, ...] = ImagePolicy().variants
    webp_quality: int = 80
    webp_method: int = 4
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

    def to_json(self) -> dict[str, JSON]:
        """The editable fields, camelCase, as the API shows them."""
        return {api: self._json_value(column) for column, (api, _) in FIELDS.items()}

    def _json_value(self, column: str) -> JSON:
        if column == "variants":
            return _variants_json(self.variants)
        value: JSON = getattr(self, column)
        return value

    def validate(self) -> SitePolicy:
        if self.photo_review_provider not in REVIEW_PROVIDERS:
            raise PolicyInvalid(
                "photoReviewProvider", f"must be one of {', '.join(REVIEW_PROVIDERS)}"
            )
        if not 1 <= self.max_batch_size <= 1000:
            raise PolicyInvalid("maxBatchSize", "must be 1..1000")
        if not 1024 <= self.max_source_bytes <= 1 << 30:
            raise PolicyInvalid("maxSourceBytes", "must be 1 KiB..1 GiB")
        if not 0 <= self.undo_window_seconds <= 30 * 86400:
            raise PolicyInvalid("undoWindowSeconds", "must be 0..2592000")
        if not 0 < self.max_megapixels <= 1000:
            raise PolicyInvalid("maxMegapixels", "must be above 0 and at most 1000")
        if not 1 <= self.min_width <= 20000 or not 1 <= self.min_height <= 20000:
            raise PolicyInvalid("minWidth", "minimum sizes must be 1..20000")
        if not 1 <= self.webp_quality <= 100:  # libwebp's 0 is a degenerate, unusable image
            raise PolicyInvalid("webpQuality", "must be 1..100")
        for name, ratio in (
            ("minAspectRatio", self.min_aspect_ratio),
            ("maxAspectRatio", self.max_aspect_ratio),
        ):
            if not MIN_ASPECT_RATIO <= ratio <= MAX_ASPECT_RATIO:
                raise PolicyInvalid(name, f"must be {MIN_ASPECT_RATIO}..{MAX_ASPECT_RATIO:g}")
        try:
            self.image_policy()
        except ValueError as exc:
            raise PolicyInvalid("policy", str(exc)) from None
        return self


def _variants_json(variants: tuple[VariantSpec, ...]) -> list[JSON]:
    return [{"name": v.name, "size": v.size} for v in variants]


# The editable fields: column -> (API name, JSON type). The API, its OpenAPI document and the
# CLI all take the field list from here.
FIELDS: dict[str, tuple[str, type]] = {
    "max_batch_size": ("maxBatchSize", int),
    "max_source_bytes": ("maxSourceBytes", int),
    "min_width": ("minWidth", int),
    "min_height": ("minHeight", int),
    "min_aspect_ratio": ("minAspectRatio", float),
    "max_aspect_ratio": ("maxAspectRatio", float),
    "max_megapixels": ("maxMegapixels", float),
    "undo_window_seconds": ("undoWindowSeconds", int),
    "photo_review_enabled": ("photoReviewEnabled", bool),
    "photo_review_provider": ("photoReviewProvider", str),
    "variants": ("variants", list),  # of {name, size}
    "webp_quality": ("webpQuality", int),
    "webp_method": ("webpMethod", int),
}
_COLUMNS = [*FIELDS, "updated_by"]


def _coerce(name: str, value: Any) -> Any:
    """``value`` as the field's type, or ``PolicyInvalid`` (no silent truthiness: ``"no"`` is
    not a boolean, ``2.5`` is not an integer)."""
    if name == "variants":
        return _variants(value)
    wanted = FIELDS[name][1]
    ok = (
        (wanted is bool and isinstance(value, bool))
        or (wanted is int and isinstance(value, int) and not isinstance(value, bool))
        or (wanted is float and isinstance(value, int | float) and not isinstance(value, bool))
        or (wanted is str and isinstance(value, str))
    )
    if not ok:
        raise PolicyInvalid(name, f"must be {_KINDS[wanted]}, not {value!r}")
    return float(value) if wanted is float else value


_KINDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _variants(value: Any) -> tuple[VariantSpec, ...]:
    """A JSON list of ``{"name": str, "size": int}`` objects (nothing else, no coercion) as
    variant specs, or ``PolicyInvalid("variants")`` saying what is wrong where."""
    if not isinstance(value, list | tuple) or not value:
        raise PolicyInvalid("variants", "must be a non-empty list of {name, size} objects")
    specs = []
    for index, item in enumerate(value):
        where = f"variant {index + 1}"
        if not isinstance(item, Mapping) or set(item) != {"name", "size"}:
            raise PolicyInvalid("variants", f"{where} must be an object of name and size only")
        name, size = item["name"], item["size"]
        if not isinstance(name, str):
            raise PolicyInvalid("variants", f"{where}: name must be a string")
        if not isinstance(size, int) or isinstance(size, bool):
            raise PolicyInvalid("variants", f"{where}: size must be an integer, not {size!r}")
        try:
            specs.append(VariantSpec(name, size))
        except ValueError as exc:
            raise PolicyInvalid("variants", str(exc)) from None
    return tuple(specs)


class SitePolicies:
    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    async def load(self) -> SitePolicy:
        async with self._pool.connection() as conn:
            cursor = await conn.execute("SELECT * FROM site_policies WHERE name = 'default'")
            row = await cursor.fetchone()
        return SitePolicy() if row is None else SitePolicy.from_row(row)

    async def update(self, changes: Mapping[str, Any], *, by: str | None = None) -> SitePolicy:
        """Apply ``changes`` (snake_case field names) after validating the whole result."""
        unknown = set(changes) - set(FIELDS)
        if unknown:
            raise PolicyInvalid(sorted(unknown)[0], "is not a policy field")
        values = {name: _coerce(name, value) for name, value in changes.items()}
        current = await self.load()
        policy = dataclasses.replace(current, **values, updated_by=by).validate()
        values = {name: getattr(policy, name) for name in _COLUMNS}
        values["variants"] = Jsonb(_variants_json(policy.variants))
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
