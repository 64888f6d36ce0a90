-- Media and the site policy that governs it.
--
-- `media` is the one source of truth for a user's library: what was uploaded (a private
-- source locator), what it became (variant locators and sizes), whether it may be shown
-- (status, the review gate), replacement links and soft deletion. Object storage only holds
-- bytes; nothing about a media item is derived from listing a bucket.

-- One row: the live limits. Workers read it at the start of every job and the API on every
-- check, so a change applies without a restart.
CREATE TABLE site_policies (
    name                  text PRIMARY KEY DEFAULT 'default' CHECK (name = 'default'),
    max_batch_size        integer NOT NULL DEFAULT 20 CHECK (max_batch_size BETWEEN 1 AND 1000),
    max_source_bytes      bigint NOT NULL DEFAULT 31457280
                              CHECK (max_source_bytes BETWEEN 1024 AND 1073741824),
    min_width             integer NOT NULL DEFAULT 200 CHECK (min_width BETWEEN 1 AND 20000),
    min_height            integer NOT NULL DEFAULT 200 CHECK (min_height BETWEEN 1 AND 20000),
    min_aspect_ratio      double precision NOT NULL DEFAULT 0.25 CHECK (min_aspect_ratio > 0),
    max_aspect_ratio      double precision NOT NULL DEFAULT 4.0,
    max_megapixels        double precision NOT NULL DEFAULT 60
                              CHECK (max_megapixels > 0 AND max_megapixels <= 1000),
    undo_window_seconds   integer NOT NULL DEFAULT 30
                              CHECK (undo_window_seconds BETWEEN 0 AND 2592000),
    photo_review_enabled  boolean NOT NULL DEFAULT false,
    photo_review_provider text NOT NULL DEFAULT 'disabled'
                              CHECK (photo_review_provider IN ('disabled', 'webhook')),
    variants              jsonb NOT NULL DEFAULT '[
        {"name": "thumb", "size": 320},
        {"name": "card", "size": 640},
        {"name": "preview", "size": 1024},
        {"name": "detail", "size": 1600},
        {"name": "detail_xl", "size": 2560}
    ]'::jsonb,
    webp_quality          integer NOT NULL DEFAULT 80 CHECK (webp_quality BETWEEN 1 AND 100),
    webp_method           integer NOT NULL DEFAULT 4 CHECK (webp_method BETWEEN 0 AND 6),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    updated_by            text,
    CHECK (max_aspect_ratio >= min_aspect_ratio)
);
INSERT INTO site_policies (name) VALUES ('default');

CREATE TYPE media_status AS ENUM (
    'pending',     -- the row exists, processing has not started
    'processing',  -- a worker is turning the source into variants
    'ready',       -- variants exist and the media may be shown (the only gallery status)
    'in_review',   -- variants exist; waiting for the review gate
    'rejected',    -- the review gate refused it
    'failed',      -- processing failed (error says why)
    'deleted'      -- hidden; purged after the undo window unless restored
);

CREATE TABLE media (
    id                   uuid PRIMARY KEY,
    owner_id             text NOT NULL,
    kind                 text NOT NULL DEFAULT 'image',
    purpose              text NOT NULL DEFAULT 'gallery' CHECK (purpose ~ '^[a-z][a-z0-9_]{0,31}$'),
    status               media_status NOT NULL DEFAULT 'pending',
    source_locator       text NOT NULL,  -- private: never in list responses
    original_filename    text,
    declared_type        text,
    detected_type        text,
    bytes                bigint,
    width                integer,
    height               integer,
    variants             jsonb NOT NULL DEFAULT '{}'::jsonb,  -- name -> {locator, width, height, bytes}
    blur_data_url        text,
    exif                 jsonb,  -- camera data without GPS
    gps                  jsonb,  -- private: never in variants or list responses
    sha256               text,
    duplicate_of         uuid,   -- an earlier item of the same owner with the same source bytes
    sort_order           integer NOT NULL DEFAULT 0,
    alt_text             text CHECK (char_length(alt_text) <= 1000),
    replaces             uuid REFERENCES media (id),
    replaced_by          uuid REFERENCES media (id),
    job_id               uuid,   -- the latest media.process job
    review               jsonb,  -- {status, provider, reason?, code?, at}
    error                jsonb,  -- {code, message} when failed
    deleted_from         media_status,  -- the status a restore returns to
    deleted_at           timestamptz,
    purge_after          timestamptz,
    purged_at            timestamptz,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    processed_at         timestamptz,
    CHECK ((status = 'deleted') = (deleted_at IS NOT NULL))
);

-- An uploaded object becomes at most one media item (completing an upload twice is one item).
CREATE UNIQUE INDEX media_source_idx ON media (owner_id, source_locator);
-- A user's library, newest first, without deleted items.
CREATE INDEX media_owner_idx ON media (owner_id, created_at DESC, id DESC) WHERE status <> 'deleted';
-- Duplicate detection within an owner's library.
CREATE INDEX media_sha256_idx ON media (owner_id, sha256) WHERE sha256 IS NOT NULL;
-- Deleted items waiting for their purge.
CREATE INDEX media_purge_idx ON media (purge_after) WHERE status = 'deleted' AND purged_at IS NULL;
