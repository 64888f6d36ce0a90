-- Bulk ingest (issue 16): millions of files from a directory tree or a bucket prefix, each
-- recorded once in a checkpoint (seed 003's `processing_log`) and processed in batches by
-- the ordinary workers. See docs/ingest.md.

-- A source: one directory or bucket prefix, with the owner its items go to. A file is
-- known by (source, path) whichever run found it, so a re-scan of the same source skips it.
CREATE TABLE ingest_sources (
    id         uuid PRIMARY KEY,
    uri        text NOT NULL UNIQUE,  -- file:///abs/dir or {provider}://{bucket}/{prefix}
    owner_id   text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- A run: one `mediajobs ingest run` (its scan, then the batches the scan queued).
CREATE TABLE ingest_runs (
    id               uuid PRIMARY KEY,
    source_id        uuid NOT NULL REFERENCES ingest_sources (id),
    owner_id         text NOT NULL,
    profile          text NOT NULL CHECK (profile ~ '^[a-z][a-z0-9_]{0,31}$'),
    batch_size       integer NOT NULL CHECK (batch_size BETWEEN 1 AND 1000),
    state            text NOT NULL DEFAULT 'scanning'
                         CHECK (state IN ('scanning', 'scanned', 'scan_failed')),
    scan_job_id      uuid,
    scanned          bigint NOT NULL DEFAULT 0,  -- files with an approved extension seen
    skipped          bigint NOT NULL DEFAULT 0,  -- other files
    scan_errors      bigint NOT NULL DEFAULT 0,  -- loops, unreadable directories, vanished files
    queued           bigint NOT NULL DEFAULT 0,  -- new or changed files sent to batches
    error            jsonb,                      -- {code, message} when the scan failed
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    scan_finished_at timestamptz
);
CREATE INDEX ingest_runs_owner_idx ON ingest_runs (owner_id, created_at DESC);

CREATE TYPE ingest_status AS ENUM (
    'pending',    -- scanned; waiting for (or in) its batch
    'ai_done',    -- reserved for image understanding (issue 17)
    'processed',  -- derivatives made
    'uploaded',   -- objects stored
    'indexed',    -- the media row is written: the item is in the library
    'failed'      -- error_code and error_message say why
);

-- The checkpoint: one row per source file. Its source and run columns carry no foreign
-- keys: sources and runs are never deleted, and the per-row checks cost a third of a scan's
-- insert time (10k new paths: 0.22 s of 0.6 s).
CREATE TABLE ingest_files (
    source_id     uuid NOT NULL,
    path          text NOT NULL,          -- relative to the source, '/'-separated
    media_id      uuid NOT NULL UNIQUE,   -- assigned once (v4); every rerun reuses it
    run_id        uuid NOT NULL,          -- the run that last queued it
    batch_id      uuid,                   -- the ingest.batch job that owns it now
    size          bigint NOT NULL,
    mtime_ns      bigint NOT NULL,
    etag          text,                   -- bucket sources: the object's ETag
    status        ingest_status NOT NULL DEFAULT 'pending',
    error_code    text,
    error_message text,
    attempts      integer NOT NULL DEFAULT 0,
    sha256        text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    processed_at  timestamptz,
    PRIMARY KEY (source_id, path)
);
CREATE INDEX ingest_files_batch_idx ON ingest_files (batch_id) WHERE batch_id IS NOT NULL;
-- A run's failed files by path: `ingest report` pages and `ingest retry` walk it in order
-- (no sort of every failed file per page); with an error code, the second index does.
CREATE INDEX ingest_files_failed_path_idx ON ingest_files (run_id, path)
    WHERE status = 'failed';
CREATE INDEX ingest_files_failed_idx ON ingest_files (run_id, error_code, path)
    WHERE status = 'failed';

-- Files per (run, status, error code), kept by statement triggers on ingest_files: `ingest
-- status` and every `ingest_progress` event answer from here in milliseconds however many
-- files a run has (a count(*) over 5M rows takes seconds; a count of the failed files per
-- code is O(failed files), paid by each of a 5M run's ~150k progress events). error_code
-- is '' for a file that is not failed (and for a failed one without a code).
CREATE TABLE ingest_counts (
    run_id     uuid NOT NULL REFERENCES ingest_runs (id) ON DELETE CASCADE,
    status     ingest_status NOT NULL,
    error_code text NOT NULL DEFAULT '',
    files      bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, status, error_code)
);

-- One delta per (run, status, code) a statement touched, applied in key order so two
-- concurrent batches lock the counter rows in the same order (no deadlock).
CREATE FUNCTION ingest_counts_apply() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO ingest_counts (run_id, status, error_code, files)
        SELECT run_id, status, code, count(*) FROM (
            SELECT run_id, status,
                   CASE WHEN status = 'failed' THEN coalesce(error_code, '') ELSE '' END AS code
            FROM new_rows
        ) AS d
        GROUP BY run_id, status, code
        ORDER BY run_id, status, code
        ON CONFLICT (run_id, status, error_code)
            DO UPDATE SET files = ingest_counts.files + excluded.files;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO ingest_counts (run_id, status, error_code, files)
        SELECT run_id, status, code, sum(delta) FROM (
            SELECT run_id, status,
                   CASE WHEN status = 'failed' THEN coalesce(error_code, '') ELSE '' END AS code,
                   1 AS delta
            FROM new_rows
            UNION ALL
            SELECT run_id, status,
                   CASE WHEN status = 'failed' THEN coalesce(error_code, '') ELSE '' END,
                   -1
            FROM old_rows
        ) AS d
        GROUP BY run_id, status, code HAVING sum(delta) <> 0
        ORDER BY run_id, status, code
        ON CONFLICT (run_id, status, error_code)
            DO UPDATE SET files = ingest_counts.files + excluded.files;
    ELSE
        INSERT INTO ingest_counts (run_id, status, error_code, files)
        SELECT run_id, status, code, -count(*) FROM (
            SELECT run_id, status,
                   CASE WHEN status = 'failed' THEN coalesce(error_code, '') ELSE '' END AS code
            FROM old_rows
        ) AS d
        GROUP BY run_id, status, code
        ORDER BY run_id, status, code
        ON CONFLICT (run_id, status, error_code)
            DO UPDATE SET files = ingest_counts.files + excluded.files;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER ingest_files_counted_insert AFTER INSERT ON ingest_files
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION ingest_counts_apply();
CREATE TRIGGER ingest_files_counted_update AFTER UPDATE ON ingest_files
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION ingest_counts_apply();
CREATE TRIGGER ingest_files_counted_delete AFTER DELETE ON ingest_files
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION ingest_counts_apply();

-- Tags of a media item (filled by image understanding, issue 17).
CREATE TABLE media_tags (
    media_id   uuid NOT NULL REFERENCES media (id) ON DELETE CASCADE,
    tag        text NOT NULL CHECK (char_length(tag) BETWEEN 1 AND 100),
    confidence real CHECK (confidence BETWEEN 0 AND 1),
    source     text NOT NULL,  -- what produced it: "clip", "exif", "user", ...
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (media_id, source, tag)
);
CREATE INDEX media_tags_tag_idx ON media_tags (tag);

-- Ingest profiles (the derivatives a bulk ingest makes), by name. Empty: every profile has
-- its defaults (imaging/catalog.py `CatalogProfile`); an entry overrides some of its fields.
ALTER TABLE site_policies ADD COLUMN ingest_profiles jsonb NOT NULL DEFAULT '{}'::jsonb;

-- Claims next to a bulk backlog. `ingest.batch` jobs (priority -10) sit behind every other
-- kind in jobs_available_idx, so a claim for the other kinds that finds fewer jobs than its
-- limit walked the whole ingest backlog to prove it: 150-220 ms per claim at 150,000
-- queued batches (a 5M-file run), paid by every upload's pickup. Workers claim ingest
-- batches apart from the other kinds (WorkerOptions.kind_limits), so a claim that does not
-- ask for `ingest.batch` now walks an index without those rows: 0.4-2.6 ms at the same
-- backlog (measured on the 2-core development machine).
CREATE INDEX jobs_available_interactive_idx ON jobs (priority DESC, run_at, id)
    WHERE state = 'queued' AND kind <> 'ingest.batch';

CREATE OR REPLACE FUNCTION mediajobs_claim(
    p_owner text, p_limit integer, p_lease double precision, p_kinds text[]
) RETURNS SETOF jobs
LANGUAGE plpgsql
SET enable_seqscan = off
SET enable_bitmapscan = off
SET enable_sort = off
AS $$
BEGIN
    IF p_kinds IS NOT NULL AND NOT ('ingest.batch' = ANY (p_kinds)) THEN
        RETURN QUERY
        WITH picked AS (
            SELECT jobs.id FROM jobs
            WHERE jobs.state = 'queued' AND jobs.kind <> 'ingest.batch'
              AND jobs.run_at <= now() AND jobs.kind = ANY (p_kinds)
            ORDER BY jobs.priority DESC, jobs.run_at, jobs.id
            LIMIT p_limit
            FOR UPDATE SKIP LOCKED
        )
        UPDATE jobs AS j
        SET state = 'running', attempt = j.attempt + 1, lease_owner = p_owner,
            lease_expires_at = now() + make_interval(secs => p_lease),
            started_at = now(), updated_at = now(), progress = 0, message = NULL
        FROM picked
        WHERE j.id = picked.id
        RETURNING j.*;
        RETURN;
    END IF;
    RETURN QUERY
    WITH picked AS (
        SELECT jobs.id FROM jobs
        WHERE jobs.state = 'queued' AND jobs.run_at <= now()
          AND (p_kinds IS NULL OR jobs.kind = ANY (p_kinds))
        ORDER BY jobs.priority DESC, jobs.run_at, jobs.id
        LIMIT p_limit
        FOR UPDATE SKIP LOCKED
    )
    UPDATE jobs AS j
    SET state = 'running', attempt = j.attempt + 1, lease_owner = p_owner,
        lease_expires_at = now() + make_interval(secs => p_lease),
        started_at = now(), updated_at = now(), progress = 0, message = NULL
    FROM picked
    WHERE j.id = picked.id
    RETURNING j.*;
END
$$;
