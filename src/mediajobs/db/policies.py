"""The site policy: one row of live limits, read at the start of every job (and by the API on
every check), so a change applies without a restart."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb

from mediajobs.db.pool import Pool
from mediajobs.imaging.policy import ImagePolicy, VariantSpec
from mediajobs.queue.models import JSON

REVIEW_PROVIDERS = ("disabled", "webhook")


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
        """camelCase, as the API shows it."""
        return {
            "maxBatchSize": self.max_batch_size,
            "maxSourceBytes": self.max_source_bytes,
            "minWidth": self.min_width,
            "minHeight": self.min_height,
            "minAspectRatio": self.min_aspect_ratio,
            "maxAspectRatio": self.max_aspect_ratio,
            "maxMegapixels": self.max_megapixels,
            "undoWindowSeconds": self.undo_window_seconds,
            "photoReviewEnabled": self.photo_review_enabled,
            "photoReviewProvider": self.photo_review_provider,
            "variants": [{"name": v.name, "size": v.size} for v in self.variants],
            "webpQuality": self.webp_quality,
            "webpMethod": self.webp_method,
        }

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
        try:
            self.image_policy()
        except ValueError as exc:
            raise PolicyInvalid("policy", str(exc)) from None
        return self


_COLUMNS = [f.name for f in dataclasses.fields(SitePolicy) if f.name != "updated_at"]
_TYPES: dict[str, type] = {
    "max_batch_size": int,
    "max_source_bytes": int,
    "min_width": int,
    "min_height": int,
    "min_aspect_ratio": float,
    "max_aspect_ratio": float,
    "max_megapixels": float,
    "undo_window_seconds": int,
    "photo_review_enabled": bool,
    "photo_review_provider": str,
    "webp_quality": int,
    "webp_method": int,
}


def _coerce(name: str, value: Any) -> Any:
    """``value`` as the field's type, or ``PolicyInvalid`` (no silent truthiness: ``"no"`` is
    not a boolean, ``2.5`` is not an integer)."""
    if name == "variants":
        try:
            return tuple(VariantSpec(str(v["name"]), int(v["size"])) for v in value)
        except (TypeError, KeyError, ValueError) as exc:
            raise PolicyInvalid("variants", f"a list of {{name, size}} ({exc})") from None
    wanted = _TYPES[name]
    ok = (
        (wanted is bool and isinstance(value, bool))
        or (wanted is int and isinstance(value, int) and not isinstance(value, bool))
        or (wanted is float and isinstance(value, int | float) and not isinstance(value, bool))
        or (wanted is str and isinstance(value, str))
    )
    if not ok:
        raise PolicyInvalid(name, f"must be a {wanted.__name__}, not {value!r}")
    return float(value) if wanted is float else value


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
        unknown = set(changes) - set(_TYPES) - {"variants"}
        if unknown:
            raise PolicyInvalid(sorted(unknown)[0], "is not a policy field")
        values = {name: _coerce(name, value) for name, value in changes.items()}
        current = await self.load()
        policy = dataclasses.replace(current, **values, updated_by=by).validate()
        values = {name: getattr(policy, name) for name in _COLUMNS}
        values["variants"] = Jsonb([{"name": v.name, "size": v.size} for v in policy.variants])
        assignments = ", ".join(f"{name} = %({name})s" for name in _COLUMNS)
        async with self._pool.connection() as conn:
            await conn.execute(
                "INSERT INTO site_policies (name) VALUES ('default') ON CONFLICT DO NOTHING"
            )
            await conn.execute(
                f"UPDATE site_policies SET {assignments}, updated_at = now() "
                "WHERE name = 'default'",
                values,
            )
        return await self.load()
