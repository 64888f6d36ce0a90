-- The job queue. The hot table `jobs` holds queued, running and recently finished jobs;
-- the maintenance task moves finished jobs to `jobs_archive` after MEDIAJOBS_JOB_RETENTION_HOT,
-- so claims always scan a small table. A column added to `jobs` must be added to
-- `jobs_archive` in the same migration (rows move with INSERT ... SELECT *).

CREATE TYPE job_state AS ENUM ('queued', 'running', 'succeeded', 'failed', 'cancelled');

CREATE TABLE jobs (
    id               uuid PRIMARY KEY,
    kind             text NOT NULL CHECK (kind <> ''),
    owner_id         text NOT NULL,
    payload          jsonb NOT NULL DEFAULT '{}'::jsonb,
    state            job_state NOT NULL DEFAULT 'queued',
    priority         smallint NOT NULL DEFAULT 0,
    run_at           timestamptz NOT NULL DEFAULT now(),
    attempt          integer NOT NULL DEFAULT 0,
    max_attempts     integer NOT NULL DEFAULT 5 CHECK (max_attempts >= 1),
    lease_owner      text,
    lease_expires_at timestamptz,
    cancel_requested boolean NOT NULL DEFAULT false,
    progress         real NOT NULL DEFAULT 0 CHECK (progress >= 0 AND progress <= 1),
    message          text,
    result           jsonb,
    error            jsonb,
    idempotency_key  text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    finished_at      timestamptz
);

-- Only jobs that can be claimed: the claim walks this index in order and stops at LIMIT.
CREATE INDEX jobs_available_idx ON jobs (priority DESC, run_at, id) WHERE state = 'queued';
-- Running jobs by lease expiry, for the recovery sweep.
CREATE INDEX jobs_lease_idx ON jobs (lease_expires_at) WHERE state = 'running';
-- Finished jobs by age, for the move to the archive.
CREATE INDEX jobs_finished_idx ON jobs (finished_at) WHERE finished_at IS NOT NULL;
-- A user's jobs, newest first.
CREATE INDEX jobs_owner_idx ON jobs (owner_id, created_at DESC);

CREATE TABLE jobs_archive (LIKE jobs INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
ALTER TABLE jobs_archive ADD PRIMARY KEY (id);
CREATE INDEX jobs_archive_finished_idx ON jobs_archive (finished_at);
CREATE INDEX jobs_archive_owner_idx ON jobs_archive (owner_id, created_at DESC);

-- Idempotency keys outlive the move to the archive, so a key stays unique per owner for
-- as long as its job is retained anywhere.
CREATE TABLE job_keys (
    owner_id   text NOT NULL,
    key        text NOT NULL,
    job_id     uuid NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (owner_id, key)
);
CREATE INDEX job_keys_created_idx ON job_keys (created_at);

-- Wake-up hint: one payload-free NOTIFY per inserting statement (Postgres folds duplicates
-- within a transaction and delivers on commit, so a rolled-back enqueue wakes nobody).
-- The channel name is also in mediajobs.queue.sql.WAKEUP_CHANNEL.
CREATE FUNCTION mediajobs_jobs_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('mediajobs_jobs', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_inserted AFTER INSERT ON jobs
    FOR EACH STATEMENT EXECUTE FUNCTION mediajobs_jobs_inserted();
