"""Every SQL statement of the media library (the ``media`` and ``media_uploads`` tables), in
one place.

Each status change is one statement that names the statuses it may start from, so two
workers can never leave an item half changed.
"""

from __future__ import annotations

# The key of the source locator ``provider://bucket/key``, as an SQL expression.
SOURCE_KEY = (
    "substr(split_part(source_locator, '://', 2), "
    "strpos(split_part(source_locator, '://', 2), '/') + 1)"
)

INSERT = """
INSERT INTO media (id, owner_id, purpose, source_locator, original_filename,
                   declared_type, alt_text, replaces, job_id, sort_order)
VALUES (%(id)s, %(owner)s, %(purpose)s, %(source)s, %(filename)s, %(declared)s,
        %(alt)s, %(replaces)s, %(job)s,
        (SELECT coalesce(max(sort_order), 0) + 1 FROM media WHERE owner_id = %(owner)s))
ON CONFLICT (owner_id, source_locator) DO NOTHING
RETURNING *
"""

BY_SOURCE = "SELECT * FROM media WHERE owner_id = %(owner)s AND source_locator = %(source)s"

REMEMBER_UPLOAD = """
INSERT INTO media_uploads (object_key, owner_id, display_name, declared_type)
VALUES (%s, %s, %s, %s)
ON CONFLICT (object_key) DO UPDATE SET owner_id = excluded.owner_id,
    display_name = excluded.display_name,
    declared_type = excluded.declared_type, created_at = now()
"""

TAKE_UPLOAD = """
DELETE FROM media_uploads WHERE object_key = %s AND owner_id = %s
RETURNING display_name
"""

SET_JOB = "UPDATE media SET job_id = %s, updated_at = now() WHERE id = %s"

GET = "SELECT * FROM media WHERE id = %(id)s"
MANY = "SELECT * FROM media WHERE id = ANY(%(ids)s::uuid[])"
GET_OWNED = GET + " AND owner_id = %(owner)s"

START_PROCESSING = """
UPDATE media SET status = 'processing', job_id = %(job)s, error = NULL, updated_at = now()
WHERE id = %(id)s AND status IN ('pending', 'processing', 'failed')
RETURNING *
"""

FINISH_PROCESSING = """
UPDATE media SET status = %(status)s, detected_type = %(detected_type)s,
    original_filename = coalesce(%(original_filename)s, original_filename),
    bytes = %(bytes)s, width = %(width)s, height = %(height)s,
    variants = %(variants)s, blur_data_url = %(blur_data_url)s, exif = %(exif)s,
    gps = %(gps)s, sha256 = %(sha256)s, duplicate_of = %(duplicate_of)s,
    review = %(review)s, error = NULL, processed_at = now(), updated_at = now()
WHERE id = %(id)s AND status = 'processing'
RETURNING *
"""

FAIL = """
UPDATE media SET status = 'failed', error = %(error)s, updated_at = now()
WHERE id = %(id)s AND status IN ('pending', 'processing')
RETURNING *
"""

DUPLICATE_OF = """
SELECT id FROM media
WHERE owner_id = %s AND sha256 = %s AND id <> %s AND status <> 'deleted'
ORDER BY created_at, id LIMIT 1
"""

SET_REVIEW = """
UPDATE media SET review = %(review)s, status = coalesce(%(status)s, status), updated_at = now()
WHERE id = %(id)s AND status = 'in_review'
RETURNING *
"""

# The replaced item is hidden as a delete (purged after the undo window) ...
REPLACE_OLD = """
UPDATE media SET status = 'deleted', deleted_from = status, deleted_at = now(),
    purge_after = now() + make_interval(secs => %(window)s),
    replaced_by = %(new)s, updated_at = now()
WHERE id = %(old)s AND owner_id = %(owner)s AND status <> 'deleted'
RETURNING *
"""
# ... and its replacement takes its place in the order.
INHERIT_SORT_ORDER = "UPDATE media SET sort_order = %s, updated_at = now() WHERE id = %s"
# ... and in every collection the old item was part of (its position and purpose), unless
# the replacement is already attached there; each collection changed moves to a new version.
TAKE_ATTACHMENTS = """
WITH moved AS (
    UPDATE entity_media AS em SET media_id = %(new)s
    WHERE em.media_id = %(old)s AND NOT EXISTS (
        SELECT 1 FROM entity_media AS x
        WHERE x.entity_type = em.entity_type AND x.entity_id = em.entity_id
          AND x.media_id = %(new)s)
    RETURNING em.entity_type, em.entity_id
)
UPDATE entities AS e SET version = e.version + 1, updated_at = now()
FROM moved WHERE e.entity_type = moved.entity_type AND e.entity_id = moved.entity_id
"""

SOFT_DELETE = """
UPDATE media SET status = 'deleted', deleted_from = status, deleted_at = now(),
    purge_after = now() + make_interval(secs => %(window)s), updated_at = now()
WHERE id = %(id)s AND owner_id = %(owner)s AND status <> 'deleted'
RETURNING *
"""

RESTORE = """
UPDATE media SET status = deleted_from, deleted_from = NULL, deleted_at = NULL,
    purge_after = NULL, updated_at = now()
WHERE id = %(id)s AND owner_id = %(owner)s AND status = 'deleted'
  AND purged_at IS NULL AND purge_after > now() AND replaced_by IS NULL
RETURNING *
"""

CLAIM_PURGE = """
SELECT * FROM media WHERE id = %(id)s AND status = 'deleted'
  AND purged_at IS NULL AND purge_after <= now()
"""

# What was computed from the image goes with it (its hash, its machine and user tags; the
# embeddings are db/vectors.py's forget_embeddings); the caption stays, as the filename does.
MARK_PURGED = """
UPDATE media SET purged_at = now(), updated_at = now(),
    phash = NULL, tags_text = '', understood_at = NULL
WHERE id = %s AND status = 'deleted' AND purged_at IS NULL
"""
FORGET_TAGS = "DELETE FROM media_tags WHERE media_id = %s"
# A purged item leaves its collections (an attachment outlives a delete, so that a restore
# puts the item back in its place); each collection changed moves to a new version.
DETACH_PURGED = """
WITH gone AS (
    DELETE FROM entity_media WHERE media_id = %s RETURNING entity_type, entity_id
)
UPDATE entities AS e SET version = e.version + 1, updated_at = now()
FROM (SELECT DISTINCT entity_type, entity_id FROM gone) AS g
WHERE e.entity_type = g.entity_type AND e.entity_id = g.entity_id
"""

# A page of the owner's items: PAGE, then any of the PAGE_* filters, then PAGE_ORDER.
PAGE = "SELECT * FROM media WHERE owner_id = %(owner)s AND status = ANY(%(statuses)s)"
PAGE_PURPOSE = "AND purpose = %(purpose)s"
PAGE_KEY_PREFIX = f"AND {SOURCE_KEY} LIKE %(like)s"
PAGE_AFTER = "AND (created_at, id) < (%(at)s, %(id)s)"
PAGE_TAG = (
    "AND EXISTS (SELECT 1 FROM media_tags AS t WHERE t.tag = %(tag)s AND t.media_id = media.id)"
)
PAGE_ORDER = "ORDER BY created_at DESC, id DESC LIMIT %(limit)s"

BY_SOURCE_KEY = f"SELECT * FROM media WHERE owner_id = %(owner)s AND {SOURCE_KEY} = %(key)s"
BY_SOURCE_KEY_LIVE = BY_SOURCE_KEY + " AND status <> 'deleted'"
NEWEST_ONE = " ORDER BY created_at DESC LIMIT 1"

# A transaction-scoped advisory lock on a 64-bit hash of the owner id.
LOCK_OWNER = "SELECT pg_advisory_xact_lock(hashtextextended('media.in_flight:' || %s, 0))"

IN_FLIGHT = """
SELECT count(*) AS n FROM media WHERE owner_id = %s AND status IN ('pending', 'processing')
"""

# Fields an owner may edit; UPDATE_FIELDS is completed with their assignments.
EDITABLE = frozenset({"alt_text", "caption", "sort_order", "purpose"})
UPDATE_FIELDS = (
    "UPDATE media SET {assignments}, updated_at = now() "
    "WHERE id = %(id)s AND owner_id = %(owner)s AND status <> 'deleted' RETURNING *"
)

# Bulk ingest's media rows (db/ingest.py), a batch in one statement: new items are inserted
# ready; an item of the same owner that is neither deleted nor purged takes the new values (a
# new version: same id); another owner's item, or a deleted one, is left alone and not
# returned. ``previous`` is the source locator the row had before (the snapshot of the
# statement, read before the upsert), when it differed. sort_order stays 0: counting the
# owner's max per batch would read a whole library (0004's INSERT does, per upload).
UPSERT_INGESTED = """
WITH input AS (
    SELECT * FROM unnest(
        %(ids)s::uuid[], %(owners)s::text[], %(purposes)s::text[], %(sources)s::text[],
        %(filenames)s::text[], %(types)s::text[], %(bytes)s::bigint[], %(widths)s::integer[],
        %(heights)s::integer[], %(variants)s::jsonb[], %(blurs)s::text[], %(exifs)s::jsonb[],
        %(gps)s::jsonb[], %(sha256s)s::text[])
    AS i (id, owner_id, purpose, source_locator, original_filename, detected_type, bytes,
          width, height, variants, blur_data_url, exif, gps, sha256)
),
before AS (
    SELECT m.id, m.source_locator FROM media AS m JOIN input USING (id)
),
written AS (
    INSERT INTO media AS m (id, owner_id, purpose, status, source_locator, original_filename,
                            detected_type, bytes, width, height, variants, blur_data_url,
                            exif, gps, sha256, processed_at)
    SELECT id, owner_id, purpose, 'ready', source_locator, original_filename, detected_type,
           bytes, width, height, variants, blur_data_url, exif, gps, sha256, now()
    FROM input
    ON CONFLICT (id) DO UPDATE SET
        purpose = excluded.purpose, source_locator = excluded.source_locator,
        original_filename = excluded.original_filename,
        detected_type = excluded.detected_type, bytes = excluded.bytes,
        width = excluded.width, height = excluded.height, variants = excluded.variants,
        blur_data_url = excluded.blur_data_url, exif = excluded.exif, gps = excluded.gps,
        sha256 = excluded.sha256, status = 'ready', error = NULL, review = NULL,
        processed_at = now(), updated_at = now()
    WHERE m.owner_id = excluded.owner_id AND m.status NOT IN ('deleted', 'rejected')
      AND m.purged_at IS NULL
    RETURNING m.id, m.source_locator
)
SELECT w.id, CASE WHEN b.source_locator <> w.source_locator THEN b.source_locator END
    AS previous
FROM written AS w LEFT JOIN before AS b USING (id)
"""

EXISTING = """
SELECT id, owner_id,
       CASE WHEN purged_at IS NOT NULL THEN 'purged' ELSE status::text END AS status
FROM media WHERE id = ANY(%(ids)s::uuid[])
"""

# media.embed's per-item results: the perceptual hash, and when understanding finished.
SET_UNDERSTOOD = """
UPDATE media AS m SET phash = i.phash, understood_at = now()
FROM unnest(%(ids)s::uuid[], %(hashes)s::bigint[]) AS i (id, phash)
WHERE m.id = i.id
"""
