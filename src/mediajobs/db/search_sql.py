"""SQL of db/search.py: full-text search and near-duplicates."""

from __future__ import annotations

# The document of full-text search: exactly the expression of media_search_idx (migration
# 0010), or the planner cannot use the index.
DOCUMENT = (
    "to_tsvector('english'::regconfig, coalesce(alt_text, '') || ' ' || coalesce(caption, '') "
    "|| ' ' || tags_text || ' ' || translate(coalesce(original_filename, ''), '._-', '   '))"
)

# websearch_to_tsquery takes what people type ("red car", "-night", "\"black cat\"", or)
# and never raises on bad syntax.
TEXT_SEARCH = f"""
SELECT m.*, ts_rank_cd({DOCUMENT}, q.query) AS rank
FROM media AS m, websearch_to_tsquery('english'::regconfig, %(q)s) AS q (query)
WHERE m.owner_id = %(owner)s AND m.status = 'ready' AND {DOCUMENT} @@ q.query
ORDER BY rank DESC, m.created_at DESC, m.id DESC
LIMIT %(limit)s OFFSET %(offset)s
"""

# Near-duplicates of one item: the owner's ready items whose perceptual hash differs in at
# most %(bits)s bits (an index-only scan of media_phash_idx), and those with the same
# sha256 (media_sha256_idx), nearest first.
DUPLICATES = """
WITH target AS (
    SELECT phash, sha256 FROM media WHERE id = %(id)s AND owner_id = %(owner)s
),
near AS (
    SELECT m.id, bit_count((m.phash # t.phash)::bit(64))::integer AS bits
    FROM media AS m, target AS t
    WHERE m.owner_id = %(owner)s AND m.phash IS NOT NULL AND m.status = 'ready'
      AND t.phash IS NOT NULL AND m.id <> %(id)s
      AND bit_count((m.phash # t.phash)::bit(64)) <= %(bits)s
),
exact AS (
    SELECT m.id, 0 AS bits FROM media AS m, target AS t
    WHERE m.owner_id = %(owner)s AND m.sha256 = t.sha256 AND m.status = 'ready'
      AND m.id <> %(id)s
),
found AS (
    SELECT id, min(bits) AS bits FROM (SELECT * FROM near UNION ALL SELECT * FROM exact) AS f
    GROUP BY id
)
SELECT m.*, f.bits, (m.sha256 = t.sha256) AS identical
FROM found AS f JOIN media AS m USING (id), target AS t
ORDER BY f.bits, m.created_at, m.id
LIMIT %(limit)s OFFSET %(offset)s
"""
