-- Job events: what the realtime layer replays to reconnecting SSE clients.
--
-- Ids come from job_events_id_seq, taken by mediajobs_record_events() under a transaction
-- advisory lock that is held until commit. So ids commit in order: once id N is visible,
-- every smaller id is either visible too or was rolled back and will never exist. The SSE
-- hub relies on this to fill gaps from this table without waiting or guessing.

CREATE SEQUENCE job_events_id_seq AS bigint;

CREATE TABLE job_events (
    id         bigint PRIMARY KEY,
    owner_id   text NOT NULL,
    job_id     uuid NOT NULL,
    type       text NOT NULL,
    data       json NOT NULL,  -- kept as written: replay sends the same text as live
    created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
ALTER SEQUENCE job_events_id_seq OWNED BY job_events.id;

-- Replay of one user's events, and of one job's events, after an id.
CREATE INDEX job_events_owner_idx ON job_events (owner_id, id);
CREATE INDEX job_events_job_idx ON job_events (job_id, id);
-- Retention: the newest id older than the window.
CREATE INDEX job_events_created_idx ON job_events (created_at);

-- How far retention has pruned: a Last-Event-ID at or below this has lost history.
CREATE TABLE job_events_retention (
    singleton      boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    pruned_through bigint NOT NULL DEFAULT 0
);
INSERT INTO job_events_retention DEFAULT VALUES;

-- Insert a transaction's events with commit-ordered ids; returns (id, created_at) in the
-- order of the arrays. The lock key is mediajobs.realtime.store.EVENTS_LOCK_KEY.
CREATE FUNCTION mediajobs_record_events(
    p_owner_ids text[], p_job_ids uuid[], p_types text[], p_data json[]
) RETURNS TABLE (id bigint, created_at timestamptz) LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(-1339146380007017357);
    RETURN QUERY
    INSERT INTO job_events AS e (id, owner_id, job_id, type, data)
    SELECT nextval('job_events_id_seq'), u.owner_id, u.job_id, u.type, u.data
    FROM unnest(p_owner_ids, p_job_ids, p_types, p_data) WITH ORDINALITY
         AS u(owner_id, job_id, type, data, n)
    ORDER BY u.n
    RETURNING e.id, e.created_at;
END
$$;
