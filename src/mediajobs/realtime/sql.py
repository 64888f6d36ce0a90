"""Every SQL statement of the realtime layer, in one place.

Events are published on one Redis channel (``Settings.events_channel``,
MEDIAJOBS_EVENTS_CHANNEL): each API process holds one subscription and sees every id, which
is how its hub notices a gap (an event published while it was not subscribed) and fills it
from Postgres. The advisory lock that orders event ids is taken inside
``mediajobs_record_events()`` (migration 0003).
"""

from __future__ import annotations

# One pruner at a time: "mjevprun".
PRUNE_LOCK_KEY = int.from_bytes(b"mjevprun", "big") - (1 << 63)

RECORD = """
SELECT id FROM mediajobs_record_events(
    %(owner_ids)s::text[], %(job_ids)s::uuid[], %(types)s::text[], %(data)s::json[])
"""

_COLUMNS = "id, owner_id, job_id, type, data::text AS data"

# Every event after an id, for the hub's gap fill and polling (the primary key walk).
AFTER = f"""
SELECT {_COLUMNS} FROM job_events
WHERE id > %(after)s AND (%(through)s::bigint IS NULL OR id <= %(through)s)
ORDER BY id LIMIT %(limit)s
"""

# One user's events after an id, for replay.
OWNER_AFTER = f"""
SELECT {_COLUMNS} FROM job_events
WHERE owner_id = %(owner_id)s AND id > %(after)s
ORDER BY id LIMIT %(limit)s
"""

# One job's events after an id (owner checked too: a job id alone grants nothing).
JOB_AFTER = f"""
SELECT {_COLUMNS} FROM job_events
WHERE job_id = %(job_id)s AND owner_id = %(owner_id)s AND id > %(after)s
ORDER BY id LIMIT %(limit)s
"""

# The newest id, and how far retention has pruned.
POSITION = """
SELECT COALESCE((SELECT max(id) FROM job_events), 0) AS latest, pruned_through
FROM job_events_retention
"""

TRY_PRUNE_LOCK = "SELECT pg_try_advisory_xact_lock(%(key)s) AS locked"

# The newest event older than the retention window: everything up to it goes.
PRUNE_HORIZON = """
SELECT max(id) AS horizon FROM job_events
WHERE created_at < clock_timestamp() - make_interval(secs => %(age)s)
"""

PRUNE_BATCH = """
DELETE FROM job_events WHERE id IN (
    SELECT id FROM job_events WHERE id <= %(horizon)s ORDER BY id LIMIT %(limit)s)
"""

MARK_PRUNED = """
UPDATE job_events_retention SET pruned_through = GREATEST(pruned_through, %(horizon)s)
"""
