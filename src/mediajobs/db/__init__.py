"""Postgres access: connection pools, migrations, repositories."""

from __future__ import annotations

from mediajobs.db.migrate import applied_migrations, available_migrations, migrate
from mediajobs.db.pool import Pool, connect, open_pool

__all__ = ["Pool", "applied_migrations", "available_migrations", "connect", "migrate", "open_pool"]
