"""Every SQL statement and NOTIFY channel of the queue, in one place.

Each state-changing statement on a running job matches ``id AND attempt AND state =
'running'`` (fencing): a worker whose lease was taken over cannot touch the new attempt.
"""

from __future__ import annotations

# NOTIFY channels. WAKEUP_CHANNEL is also named by the trigger in migration 0001.
WAKEUP_CHANNEL = "mediajobs_jobs"  # payload-free hint: claimable jobs may exist
CANCEL_CHANNEL = "mediajobs_cancel"  # payload: the id of a running job asked to stop

# Advisory lock key for the maintenance sweep: "mjmaintn" read as a signed bigint.
MAINTENANCE_LOCK_KEY = int.from_bytes(b"mjmaintn", "big") - (1 << 63)

_COLUMNS = (
    "id", "kind", "owner_id", "payload", "state", "priority", "run_at", "attempt",
    "max_attempts", "lease_owner", "lease_expires_at", "cancel_requested", "progress",
    "message", "result", "error", "idempotency_key", "created_at", "updated_at",
    "started_at", "finished_at",
)  # fmt: skip
JOB_COLUMNS = ", ".join(_COLUMNS)
J_COLUMNS = ", ".join(f"j.{column}" for column in _COLUMNS)


# Every way a running job whose cancel was requested ends (its handler stops, fails or raises,
# its worker hands it back or dies) makes it `cancelled` with this error, so it emits
# `job_cancelled`: the state follows the cancel request, not the path that got there. A job
# that succeeds before it notices the request stays succeeded: its result exists.
def _cancelled_error(detail: str) -> str:
    """The SQL expression of a cancelled job's error; ``detail`` is an SQL text expression."""
    return (
        "jsonb_build_object('code', 'cancelled', 'message', 'cancelled while running; ' || "
        f"{detail}, 'retryable', false)"
    )


INSERT_JOB = """
INSERT INTO jobs (id, kind, owner_id, payload, priority, run_at, max_attempts, idempotency_key)
VALUES (%(id)s, %(kind)s, %(owner_id)s, %(payload)s, %(priority)s,
        COALESCE(%(run_at)s, now()) + make_interval(secs => %(delay)s),
        %(max_attempts)s, %(idempotency_key)s)
"""

INSERT_JOB_KEY = """
INSERT INTO job_keys (owner_id, key, job_id) VALUES (%(owner_id)s, %(idempotency_key)s, %(id)s)
ON CONFLICT (owner_id, key) DO NOTHING
RETURNING job_id
"""

SELECT_JOB_KEY = "SELECT job_id FROM job_keys WHERE owner_id = %(owner_id)s AND key = %(key)s"

INSERT_JOBS_BULK = """
INSERT INTO jobs (id, kind, owner_id, payload, priority, run_at, max_attempts)
SELECT t.id, t.kind, t.owner_id, t.payload, t.priority, now() + make_interval(secs => t.delay),
       t.max_attempts
FROM unnest(%(ids)s::uuid[], %(kinds)s::text[], %(owner_ids)s::text[], %(payloads)s::jsonb[],
            %(priorities)s::smallint[], %(delays)s::float8[], %(max_attempts)s::int[])
     AS t(id, kind, owner_id, payload, priority, delay, max_attempts)
"""

SELECT_JOB = f"""
SELECT {JOB_COLUMNS} FROM jobs WHERE id = %(id)s
UNION ALL
SELECT {JOB_COLUMNS} FROM jobs_archive WHERE id = %(id)s
LIMIT 1
"""

# Claim: migration 0002's function, which pins the plan (an ordered walk of the available
# index that stops after `limit` rows). `kinds` NULL claims every kind.
CLAIM = "SELECT * FROM mediajobs_claim(%(owner)s, %(limit)s, %(lease)s, %(kinds)s::text[])"

# Statements that name their jobs by id also say `j.id = ANY(ids)`: that steers the planner
# to the primary key whatever its statistics say (a join against unnest() alone may be
# planned as a scan of every running job).

# Batched completion: one statement for every job that finished since the last flush.
COMPLETE_MANY = """
UPDATE jobs AS j
SET state = 'succeeded', result = d.result, progress = 1, message = NULL, error = NULL,
    finished_at = now(), updated_at = now(), lease_owner = NULL, lease_expires_at = NULL
FROM unnest(%(ids)s::uuid[], %(attempts)s::int[], %(results)s::jsonb[]) AS d(id, attempt, result)
WHERE j.id = ANY(%(ids)s::uuid[]) AND j.id = d.id AND j.attempt = d.attempt
  AND j.state = 'running'
RETURNING j.id
"""

# A failed attempt: back to the queue after `delay` if it may retry, else failed for good. A
# job whose cancel was requested ends cancelled instead, whatever the error (_cancelled_error).
FAIL = f"""
UPDATE jobs
SET state = CASE WHEN cancel_requested THEN 'cancelled'
                 WHEN %(retry)s AND attempt < max_attempts THEN 'queued'
                 ELSE 'failed' END::job_state,
    run_at = CASE WHEN NOT cancel_requested AND %(retry)s AND attempt < max_attempts
                  THEN now() + make_interval(secs => %(delay)s) ELSE run_at END,
    finished_at = CASE WHEN NOT cancel_requested AND %(retry)s AND attempt < max_attempts
                       THEN NULL ELSE now() END,
    error = CASE WHEN cancel_requested
                 THEN {_cancelled_error("'the attempt then ended with ' || (%(error)s ->> 'code')")}
                 ELSE %(error)s END,
    updated_at = now(), lease_owner = NULL, lease_expires_at = NULL
WHERE id = %(id)s AND attempt = %(attempt)s AND state = 'running'
RETURNING id, kind, owner_id, attempt, state, run_at, error
"""

# A running job that stopped because it was asked to.
MARK_CANCELLED = f"""
UPDATE jobs
SET state = 'cancelled', finished_at = now(), updated_at = now(),
    lease_owner = NULL, lease_expires_at = NULL,
    error = {_cancelled_error("'the handler stopped'")}
WHERE id = %(id)s AND attempt = %(attempt)s AND state = 'running'
RETURNING id, kind, owner_id, attempt
"""

SET_PROGRESS = """
UPDATE jobs SET progress = %(progress)s, message = %(message)s, updated_at = now()
WHERE id = %(id)s AND attempt = %(attempt)s AND state = 'running'
RETURNING cancel_requested
"""

# Renew the leases this worker holds; the rows that come back are still ours.
HEARTBEAT = """
UPDATE jobs AS j
SET lease_expires_at = now() + make_interval(secs => %(lease)s)
FROM unnest(%(ids)s::uuid[], %(attempts)s::int[]) AS d(id, attempt)
WHERE j.id = ANY(%(ids)s::uuid[]) AND j.id = d.id AND j.attempt = d.attempt
  AND j.state = 'running'
RETURNING j.id, j.cancel_requested
"""

# Cancel: a queued job is cancelled at once; a running one gets the flag it polls.
CANCEL = """
UPDATE jobs
SET state = CASE WHEN state = 'queued' THEN 'cancelled'::job_state ELSE state END,
    finished_at = CASE WHEN state = 'queued' THEN now() ELSE finished_at END,
    cancel_requested = (state = 'running'),
    updated_at = now()
WHERE id = %(id)s AND state IN ('queued', 'running') {owner_filter}
RETURNING id, kind, owner_id, attempt, state
"""
CANCEL_ANY_OWNER = CANCEL.format(owner_filter="")
CANCEL_FOR_OWNER = CANCEL.format(owner_filter="AND owner_id = %(owner_id)s")

# Graceful shutdown: unfinished jobs go straight back to the queue for another worker (one
# whose cancel was requested ends cancelled). An attempt that never started its handler does
# not count.
HAND_BACK = f"""
UPDATE jobs AS j
SET state = CASE WHEN j.cancel_requested THEN 'cancelled' ELSE 'queued' END::job_state,
    finished_at = CASE WHEN j.cancel_requested THEN now() END,
    error = CASE WHEN j.cancel_requested
                 THEN {_cancelled_error("'its worker stopped first'")} ELSE j.error END,
    run_at = now(), updated_at = now(),
    attempt = j.attempt - CASE WHEN %(started)s THEN 0 ELSE 1 END,
    lease_owner = NULL, lease_expires_at = NULL, message = 'handed back by a stopping worker'
FROM unnest(%(ids)s::uuid[], %(attempts)s::int[]) AS d(id, attempt)
WHERE j.id = ANY(%(ids)s::uuid[]) AND j.id = d.id AND j.attempt = d.attempt
  AND j.state = 'running'
RETURNING j.id, j.kind, j.owner_id, j.attempt, j.state
"""

NOTIFY_WAKEUP = f"SELECT pg_notify('{WAKEUP_CHANNEL}', '')"
NOTIFY_CANCEL = f"SELECT pg_notify('{CANCEL_CHANNEL}', %(id)s)"

# Recovery: jobs whose worker stopped renewing the lease (it crashed, froze or lost its
# network). The dead attempt counts; a job out of attempts fails, a cancelled one ends.
REAP_EXPIRED = f"""
WITH expired AS (
    SELECT id FROM jobs
    WHERE state = 'running' AND lease_expires_at < now()
    ORDER BY lease_expires_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE jobs AS j
SET state = CASE WHEN j.cancel_requested THEN 'cancelled'
                 WHEN j.attempt >= j.max_attempts THEN 'failed'
                 ELSE 'queued' END::job_state,
    finished_at = CASE WHEN j.cancel_requested OR j.attempt >= j.max_attempts
                       THEN now() END,
    run_at = now(), updated_at = now(), lease_owner = NULL, lease_expires_at = NULL,
    error = CASE WHEN j.cancel_requested
                 THEN {_cancelled_error("'its worker stopped renewing the lease'")}
                 ELSE jsonb_build_object(
                     'code', 'lease_expired',
                     'message', 'the worker running attempt ' || j.attempt
                                || ' stopped renewing its lease',
                     'retryable', j.attempt < j.max_attempts) END
FROM expired
WHERE j.id = expired.id
RETURNING j.id, j.kind, j.owner_id, j.attempt, j.state, j.error
"""

# Retention: finished jobs leave the hot table in batches; the archive and the idempotency
# keys are pruned after the longer retention.
TRY_MAINTENANCE_LOCK = "SELECT pg_try_advisory_xact_lock(%(key)s) AS locked"

ARCHIVE_FINISHED = f"""
WITH done AS (
    SELECT id FROM jobs
    WHERE finished_at < now() - make_interval(secs => %(age)s)
    ORDER BY finished_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), moved AS (
    DELETE FROM jobs AS j USING done WHERE j.id = done.id
    RETURNING {J_COLUMNS}
)
INSERT INTO jobs_archive ({JOB_COLUMNS}) SELECT {JOB_COLUMNS} FROM moved
ON CONFLICT (id) DO NOTHING
"""

PRUNE_ARCHIVE = """
DELETE FROM jobs_archive AS a USING (
    SELECT id FROM jobs_archive WHERE finished_at < now() - make_interval(secs => %(age)s)
    LIMIT %(limit)s
) AS old
WHERE a.id = old.id
"""

PRUNE_KEYS = """
DELETE FROM job_keys AS k USING (
    SELECT owner_id, key FROM job_keys
    WHERE created_at < now() - make_interval(secs => %(age)s)
    LIMIT %(limit)s
) AS old
WHERE k.owner_id = old.owner_id AND k.key = old.key
"""

COUNT_BY_STATE = "SELECT state::text AS state, count(*) AS n FROM jobs GROUP BY state"

OLDEST_QUEUED = """
SELECT EXTRACT(EPOCH FROM now() - min(run_at))::float8 AS age
FROM jobs WHERE state = 'queued' AND run_at <= now()
"""
