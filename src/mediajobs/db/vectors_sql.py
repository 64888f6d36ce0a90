"""SQL of db/vectors.py. Embedding tables are named after their registry row
(``media_embeddings_<id>``): statements that name one are templates completed with
``psycopg.sql.Identifier``, never with string formatting of user input."""

from __future__ import annotations

INSTALLED = "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
AVAILABLE = "SELECT default_version FROM pg_available_extensions WHERE name = 'vector'"
CREATE_EXTENSION = "CREATE EXTENSION IF NOT EXISTS vector"

# One process at a time creates, swaps or drops embedding indexes (a transaction-scoped
# advisory lock on the bytes "mjvector").
LOCK_REGISTRY = "SELECT pg_advisory_xact_lock(%s)"
REGISTRY_LOCK_KEY = int.from_bytes(b"mjvector", "big") - (1 << 63)

CURRENT = """
SELECT * FROM embedding_indexes WHERE state IN ('active', 'building') ORDER BY id
"""
GET = "SELECT * FROM embedding_indexes WHERE id = %s"
INSERT = """
INSERT INTO embedding_indexes (model, dimensions, state, activated_at)
VALUES (%(model)s, %(dimensions)s, %(state)s, CASE WHEN %(state)s = 'active' THEN now() END)
RETURNING *
"""
RETIRE = """
UPDATE embedding_indexes SET state = 'retired', retired_at = now() WHERE id = %s RETURNING *
"""
ACTIVATE = """
UPDATE embedding_indexes SET state = 'active', activated_at = now()
WHERE id = %s AND state = 'building' RETURNING *
"""

# Templates: {table}, {owner_idx}, {hnsw_idx} are identifiers; {dimensions} an integer.
CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS {table} (
    media_id   uuid PRIMARY KEY REFERENCES media (id) ON DELETE CASCADE,
    owner_id   text NOT NULL,
    model      text NOT NULL,
    embedding  vector({dimensions}) NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
)
"""
CREATE_OWNER_INDEX = "CREATE INDEX IF NOT EXISTS {owner_idx} ON {table} (owner_id)"
# HNSW over cosine distance with pgvector's defaults (m = 16, ef_construction = 64).
CREATE_HNSW = (
    "CREATE INDEX IF NOT EXISTS {hnsw_idx} ON {table} USING hnsw (embedding vector_cosine_ops)"
)
DROP_TABLE = "DROP TABLE IF EXISTS {table}"
HAS_INDEX = "SELECT 1 FROM pg_indexes WHERE tablename = %s AND indexname = %s"

# Write a batch: vectors arrive as pgvector's text form ('[0.1,0.2,...]'). An item purged
# while its job ran is skipped (its vectors went with the purge).
UPSERT = """
INSERT INTO {table} AS e (media_id, owner_id, model, embedding)
SELECT i.media_id, m.owner_id, %(model)s, i.embedding::vector
FROM unnest(%(ids)s::uuid[], %(vectors)s::text[]) AS i (media_id, embedding)
JOIN media AS m ON m.id = i.media_id AND m.purged_at IS NULL
ON CONFLICT (media_id) DO UPDATE SET
    embedding = excluded.embedding, model = excluded.model, created_at = now()
"""

# The items an index lacks, by id (reindex walks them in pages): ready images.
MISSING = """
SELECT m.id FROM media AS m
WHERE m.status = 'ready' AND m.kind = 'image' AND m.id > %(after)s
  AND NOT EXISTS (SELECT 1 FROM {table} AS e WHERE e.media_id = m.id)
ORDER BY m.id LIMIT %(limit)s
"""
COUNT_MISSING = """
SELECT count(*) AS n FROM media AS m
WHERE m.status = 'ready' AND m.kind = 'image'
  AND NOT EXISTS (SELECT 1 FROM {table} AS e WHERE e.media_id = m.id)
"""
COUNT_ROWS = "SELECT count(*) AS n FROM {table}"
# Every registered index whose table exists (a retired one's is dropped), for a purge.
WITH_TABLES = """
SELECT * FROM embedding_indexes WHERE to_regclass('media_embeddings_' || id) IS NOT NULL
"""
FORGET = "DELETE FROM {table} WHERE media_id = %s"
VECTOR_OF = "SELECT embedding::text AS embedding FROM {table} WHERE media_id = %s"

# Nearest items of an owner by cosine distance. The HNSW walk gives a candidate list of
# %(window)s rows (hnsw.ef_search is at least as large: the walk's own list); the page is
# cut from it by (distance, id), so items at one distance (copies of a photo) keep one
# order from page to page, and only the page's rows are joined to media (the nested loop
# stops at the LIMIT). SEARCH_EXACT is the same over an exact ordering (run with index
# scans off): a complete answer for an owner HNSW's filtered walk came back short for.
SET_EF_SEARCH = "SELECT set_config('hnsw.ef_search', %s, true)"
SET_SESSION_EF_SEARCH = "SELECT set_config('hnsw.ef_search', %s, false)"
SET_EXACT = "SELECT set_config('enable_indexscan', 'off', true)"
_PAGE = """
SELECT m.*, c.distance
FROM candidates AS c JOIN media AS m ON m.id = c.media_id
WHERE m.status = 'ready' AND m.id <> ALL(%(exclude)s::uuid[])
ORDER BY c.distance, c.media_id
LIMIT %(limit)s OFFSET %(offset)s
"""
SEARCH = (
    """
WITH candidates AS (
    SELECT e.media_id, (e.embedding <=> %(query)s::vector) AS distance
    FROM {table} AS e WHERE e.owner_id = %(owner)s
    ORDER BY e.embedding <=> %(query)s::vector
    LIMIT %(window)s
)"""
    + _PAGE
)
SEARCH_EXACT = (
    """
WITH candidates AS (
    SELECT e.media_id, (e.embedding <=> %(query)s::vector) AS distance
    FROM {table} AS e WHERE e.owner_id = %(owner)s
    ORDER BY 2, 1
    LIMIT %(window)s
)"""
    + _PAGE
)
