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

# The items of a sync that the owner may attach: their own, neither deleted nor purged.
ATTACHABLE = """
SELECT id FROM media
WHERE id = ANY(%(ids)s) AND owner_id = %(owner)s AND status <> 'deleted' AND purged_at IS NULL
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
