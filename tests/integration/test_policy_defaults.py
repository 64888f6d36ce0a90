"""The policy a freshly migrated database holds is the code's default policy: migration
0004 writes the first row with its own column defaults, so this keeps the two from drifting
(the code's ``SitePolicy`` defaults, taken from ``ImagePolicy``, are the ones to change)."""

from __future__ import annotations

import dataclasses

from mediajobs.db import open_pool
from mediajobs.db.policies import EDITABLE, SitePolicies, SitePolicy


async def test_a_fresh_database_holds_the_default_policy(database_url: str) -> None:
    pool = await open_pool(database_url, name="test", min_size=1, max_size=1)
    try:
        stored = await SitePolicies(pool).load()
    finally:
        await pool.close()
    assert stored.updated_by is None
    default = SitePolicy()
    assert {name: getattr(stored, name) for name in EDITABLE} == {
        name: getattr(default, name) for name in EDITABLE
    }
    assert dataclasses.replace(stored, updated_at=None) == default
