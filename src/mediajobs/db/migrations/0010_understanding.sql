-- Image understanding (issue 17): perceptual hashes, tags in full-text search, a caption,
-- and the registry of embedding indexes.
--
-- Nothing here needs pgvector: the machine's PostgreSQL may not have it. The embedding
-- tables themselves (vector(d) columns, HNSW indexes) are created at run time by
-- db/vectors.py, once the extension is found and a model's dimension is known.

ALTER TABLE media
    ADD COLUMN phash bigint,                        -- 64-bit perceptual hash (vision/phash.py)
    ADD COLUMN caption text CHECK (char_length(caption) <= 2000),
    -- The item's distinct tags, one per line: the full-text index reads them from the row
    -- (an expression index cannot join media_tags). Written with the tags, in the same
    -- statement (db/tags.py), never by hand.
    ADD COLUMN tags_text text NOT NULL DEFAULT '',
    ADD COLUMN understood_at timestamptz;           -- when media.embed last finished it

-- Full-text search over what people write and what tagging found (the fallback of
-- GET /media/search without a model or without pgvector). The 'english' configuration
-- stems ("dogs" finds "dog"); MEDIA_SEARCH_DOCUMENT in db/search_sql.py must match this
-- expression exactly for the planner to use the index. A file name's dots, dashes and
-- underscores become spaces: the parser would read "dog-park.png" as one host name.
CREATE INDEX media_search_idx ON media USING gin (
    to_tsvector('english'::regconfig,
        coalesce(alt_text, '') || ' ' || coalesce(caption, '') || ' ' || tags_text || ' ' ||
        translate(coalesce(original_filename, ''), '._-', '   '))
) WHERE status = 'ready';

-- Near-duplicates: an owner's hashes, read by an index-only scan (GET /media/{id}/duplicates).
CREATE INDEX media_phash_idx ON media (owner_id) INCLUDE (phash, id)
    WHERE phash IS NOT NULL AND status = 'ready';

-- Tags by owner for GET /media?tag=: the tag index joins back to the owner's live items.
CREATE INDEX media_tags_tag_media_idx ON media_tags (tag, media_id);
DROP INDEX media_tags_tag_idx;

-- One row per embedding index: a table media_embeddings_<id> with a vector(dimensions)
-- column, made by one model. At most one index is active (search reads it) and at most one
-- is building (`mediajobs models reindex` fills it while search keeps reading the active
-- one, then swaps them in one transaction and drops the retired table).
CREATE TABLE embedding_indexes (
    id           integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    model        text NOT NULL CHECK (char_length(model) BETWEEN 1 AND 200),
    dimensions   integer NOT NULL CHECK (dimensions BETWEEN 1 AND 2000),  -- HNSW's limit
    state        text NOT NULL CHECK (state IN ('building', 'active', 'retired')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    activated_at timestamptz,
    retired_at   timestamptz
);
CREATE UNIQUE INDEX embedding_indexes_active_idx ON embedding_indexes ((true))
    WHERE state = 'active';
CREATE UNIQUE INDEX embedding_indexes_building_idx ON embedding_indexes ((true))
    WHERE state = 'building';
