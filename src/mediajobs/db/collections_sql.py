"""The statements of ``db/collections.py`` (tables ``entities`` and ``entity_media``,
migration 0006)."""

from __future__ import annotations

# The entity, created for ``owner`` when it does not exist yet, then locked for the sync:
# concurrent syncs of one collection run one after another, and each sees the version the
# previous one left.
CLAIM_ENTITY = """
INSERT INTO entities (entity_type, entity_id, owner_id)
VALUES (%(type)s, %(id)s, %(owner)s)
ON CONFLICT (entity_type, entity_id) DO NOTHING
"""

LOCK_ENTITY = """
SELECT entity_type, entity_id, owner_id, version FROM entities
WHERE entity_type = %(type)s AND entity_id = %(id)s
FOR UPDATE
"""

SELECT_ENTITY = """
SELECT entity_type, entity_id, owner_id, version FROM entities
WHERE entity_type = %(type)s AND entity_id = %(id)s
"""

SELECT_ATTACHMENTS = """
SELECT media_id, purpose, position FROM entity_media
WHERE entity_type = %(type)s AND entity_id = %(id)s
ORDER BY position
"""

# The items of a sync that the owner may attach: their own, not purged, and not deleted
# unless already in this collection (a deleted item keeps its place until its purge). The
# rows stay locked until the sync commits: a purge (which updates the row first) either
# finishes before, and the item is refused, or waits, and then detaches what the sync made.
ATTACHABLE = """
SELECT m.id FROM media AS m
WHERE m.id = ANY(%(ids)s) AND m.owner_id = %(owner)s AND m.purged_at IS NULL
  AND (m.status <> 'deleted' OR EXISTS (
      SELECT 1 FROM entity_media AS em
      WHERE em.entity_type = %(type)s AND em.entity_id = %(id)s AND em.media_id = m.id))
FOR SHARE OF m
"""

# The items with their media rows, in order: all of them (the owner's view) ...
SELECT_MEDIA = """
SELECT m.*, em.purpose AS attached_purpose, em.position AS attached_position
FROM entity_media AS em JOIN media AS m ON m.id = em.media_id
WHERE em.entity_type = %(type)s AND em.entity_id = %(id)s
ORDER BY em.position
"""
# ... or only what the public may see: ready items (processed, and past the review gate when
# review is on; an item in review, rejected, failed or deleted is never ready).
SELECT_READY_MEDIA = """
SELECT m.*, em.purpose AS attached_purpose, em.position AS attached_position
FROM entity_media AS em JOIN media AS m ON m.id = em.media_id
WHERE em.entity_type = %(type)s AND em.entity_id = %(id)s
  AND m.status = 'ready' AND m.purged_at IS NULL
ORDER BY em.position
"""

# What the public read of a collection depends on, as one short text: the collection's
# version and each ready item's id, last change (every update of a media row sets
# updated_at), purpose and position. It changes whenever the public read would; no row when
# the entity does not exist. md5 here only detects change; nothing trusts it for security.
PUBLIC_FINGERPRINT = """
SELECT md5(e.version::text || ':' || coalesce(string_agg(
    m.id::text || '/' || m.updated_at::text || '/' || em.purpose || '/' || em.position,
    ',' ORDER BY em.position), '')) AS fingerprint
FROM entities AS e
LEFT JOIN entity_media AS em USING (entity_type, entity_id)
LEFT JOIN media AS m ON m.id = em.media_id AND m.status = 'ready' AND m.purged_at IS NULL
WHERE e.entity_type = %(type)s AND e.entity_id = %(id)s
GROUP BY e.entity_type, e.entity_id, e.version
"""

# The collections that hold an item, with their owners and versions.
CONTAINING = """
SELECT e.entity_type, e.entity_id, e.owner_id, e.version
FROM entity_media AS em JOIN entities AS e USING (entity_type, entity_id)
WHERE em.media_id = %s
ORDER BY e.entity_type, e.entity_id
"""

DETACH_ALL = """
DELETE FROM entity_media WHERE entity_type = %(type)s AND entity_id = %(id)s
"""

ATTACH = """
INSERT INTO entity_media (entity_type, entity_id, media_id, purpose, position)
SELECT %(type)s, %(id)s, item.media_id, item.purpose, item.position - 1
FROM unnest(%(media)s::uuid[], %(purposes)s::text[]) WITH ORDINALITY
    AS item (media_id, purpose, position)
"""

BUMP_VERSION = """
UPDATE entities SET version = version + 1, updated_at = now()
WHERE entity_type = %(type)s AND entity_id = %(id)s
RETURNING version
"""

ENTITIES = """
SELECT e.entity_type, e.entity_id, e.owner_id, e.version
FROM entities AS e
JOIN unnest(%(types)s::text[], %(ids)s::text[]) AS k (entity_type, entity_id)
    USING (entity_type, entity_id)
ORDER BY e.entity_type, e.entity_id
"""
