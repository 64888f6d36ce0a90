"""The statements of ``db/ingest.py`` (tables ``ingest_sources``, ``ingest_runs``,
``ingest_files`` and ``ingest_counts``, migrations 0008 and 0009).

Lock order: every statement that changes file statuses also touches the row of the run
those files belong to (its ``updated_at``: the run's last change, which ``status`` shows).
It locks in one order: the file rows first (the run rows are chosen by an InitPlan that
reads every changed file before any run row is locked), then the run rows, then the
counter rows of ``ingest_counts`` (by the statement triggers at the statement's end, in key
order). So a scan batch and the ingest batches of its run do not wait on each other in a
cycle over run or counter rows. Two statements changing the same file rows in different
orders (a file rescanned while its batch finishes) can still deadlock; Postgres then fails
one of them, and its job is retried.
"""

from __future__ import annotations

# Statuses of a file its batch has not finished yet (``db.ingest.OPEN_STATUSES`` is made
# from these): every statement below that means "still open" lists exactly these.
OPEN_STATUS_NAMES = ("pending", "processed", "uploaded")
OPEN = "(" + ", ".join(f"'{name}'" for name in OPEN_STATUS_NAMES) + ")"

# A source holds its uri while a run of it is scanning (its scan job queued or running) or
# any file of it is recorded (the items those files became are its owner's). One that holds
# nothing (every run of it found no approved file, or its scan failed or was cancelled: a
# typo, an empty folder) is free: any owner may run it again, and it does not count as an
# overlap. {s} is the source's alias.
SOURCE_HOLDS = """(
    EXISTS (SELECT 1 FROM ingest_files AS hf WHERE hf.source_id = {s}.id)
    OR EXISTS (
        SELECT 1 FROM ingest_runs AS hr JOIN jobs AS hj ON hj.id = hr.scan_job_id
        WHERE hr.source_id = {s}.id AND hr.state = 'scanning'
          AND hj.state IN ('queued', 'running'))
)"""

# Sources are claimed one at a time (a transaction-level advisory lock), so two runs of
# overlapping sources started at once cannot both pass OVERLAPPING_SOURCE, and a free
# source changes owner only while no run of it can start.
SOURCES_LOCK = "SELECT pg_advisory_xact_lock(%(key)s)"

GET_SOURCE = f"""
SELECT s.id, s.owner_id, {SOURCE_HOLDS.format(s="s")} AS holds
FROM ingest_sources AS s WHERE s.uri = %(uri)s
"""

INSERT_SOURCE = """
INSERT INTO ingest_sources (id, uri, owner_id) VALUES (%(id)s, %(uri)s, %(owner)s)
RETURNING id, owner_id
"""

# A free source (SOURCE_HOLDS is false) claimed by another owner.
REOWN_SOURCE = "UPDATE ingest_sources SET owner_id = %(owner)s WHERE id = %(id)s"

# A known source that holds files (SOURCE_HOLDS) and holds the source %(uri)s, or lies
# inside it: a folder and its parent, a prefix and a longer one. Ingesting both would make
# two items of every file they share. Uris are canonical (ingest/source.py): a bucket
# prefix ends with '/', a directory does not (but for the root, file:///), so '/' is added
# where missing before comparing. ``inside``: %(uri)s lies inside it (else it holds it).
OVERLAPPING_SOURCE = f"""
SELECT s.uri, s.owner_id, inside FROM ingest_sources AS s,
LATERAL (SELECT starts_with(
    %(uri)s, CASE WHEN right(s.uri, 1) = '/' THEN s.uri ELSE s.uri || '/' END) AS inside
) AS i
WHERE s.uri <> %(uri)s
  AND (inside OR starts_with(
      s.uri, CASE WHEN right(%(uri)s, 1) = '/' THEN %(uri)s ELSE %(uri)s || '/' END))
  AND {SOURCE_HOLDS.format(s="s")}
ORDER BY s.uri LIMIT 1
"""

# A run's columns, with its source's uri and owner, and its scan job's state, attempt and
# error (null once the job is archived): IngestRun.from_row tells from them a run whose
# scan job ended without ending its scan (a worker killed on the last attempt, a cancel).
RUN_COLUMNS = """
r.id, r.source_id, s.uri AS source_uri, s.owner_id AS source_owner_id, r.owner_id, r.profile,
r.batch_size, r.state, r.scan_job_id, r.scanned, r.skipped, r.scan_errors, r.queued, r.error,
r.created_at, r.updated_at, r.scan_finished_at, sj.state AS scan_job_state,
sj.attempt AS scan_job_attempt, sj.max_attempts AS scan_job_max_attempts,
sj.error AS scan_job_error
"""
# What RUN_COLUMNS reads beside the run ``r``.
RUN_JOINS = """JOIN ingest_sources AS s ON s.id = r.source_id
LEFT JOIN jobs AS sj ON sj.id = r.scan_job_id"""

INSERT_RUN = f"""
WITH r AS (
    INSERT INTO ingest_runs (id, source_id, owner_id, profile, batch_size)
    VALUES (%(id)s, %(source)s, %(owner)s, %(profile)s, %(batch_size)s)
    RETURNING *
)
SELECT {RUN_COLUMNS} FROM r {RUN_JOINS}
"""

GET_RUN = f"""
SELECT {RUN_COLUMNS} FROM ingest_runs AS r {RUN_JOINS}
WHERE r.id = %(id)s
"""
GET_RUN_OWNED = GET_RUN + " AND r.owner_id = %(owner)s"

LATEST_RUN = f"""
SELECT {RUN_COLUMNS} FROM ingest_runs AS r {RUN_JOINS}
ORDER BY r.created_at DESC, r.id DESC LIMIT 1
"""
# The owner's newest run (index ingest_runs_owner_idx).
LATEST_RUN_OWNED = f"""
SELECT {RUN_COLUMNS} FROM ingest_runs AS r {RUN_JOINS}
WHERE r.owner_id = %(owner)s
ORDER BY r.created_at DESC, r.id DESC LIMIT 1
"""

# The newest runs (of one owner when %(owner)s is not null), newest first, each with its
# files done (indexed, ai_done or failed), failed and total from the counters (no file row
# read): the newest %(limit)s first, then each one's counters.
LIST_RUNS = f"""
SELECT {RUN_COLUMNS}, c.total, c.done, c.failed
FROM (
    SELECT * FROM ingest_runs
    WHERE %(owner)s::text IS NULL OR owner_id = %(owner)s
    ORDER BY created_at DESC, id DESC
    LIMIT %(limit)s
) AS r
{RUN_JOINS}
CROSS JOIN LATERAL (
    SELECT coalesce(sum(files), 0) AS total,
        coalesce(sum(files) FILTER (WHERE status IN ('indexed', 'ai_done', 'failed')), 0)
            AS done,
        coalesce(sum(files) FILTER (WHERE status = 'failed'), 0) AS failed
    FROM ingest_counts WHERE run_id = r.id
) AS c
ORDER BY r.created_at DESC, r.id DESC
"""

# The run's batch jobs queued again after a failed attempt (an outage: a store out of
# reach, a source not mounted), and the error of the one that failed most often. Reads the
# queued jobs (index jobs_available_idx): for `ingest status` of an unfinished run.
WAITING_BATCHES = """
SELECT count(*) AS batches, (array_agg(error ORDER BY attempt DESC, id))[1] AS error
FROM jobs
WHERE state = 'queued' AND kind = 'ingest.batch' AND attempt > 0 AND error IS NOT NULL
  AND payload->>'runId' = %(run)s::text
"""

SET_SCAN_JOB = "UPDATE ingest_runs SET scan_job_id = %s, updated_at = now() WHERE id = %s"

ADD_SCAN_COUNTS = """
UPDATE ingest_runs SET scanned = scanned + %(scanned)s, skipped = skipped + %(skipped)s,
    scan_errors = scan_errors + %(errors)s, queued = queued + %(queued)s, updated_at = now()
WHERE id = %(id)s
"""

# A scan attempt walks the whole source again (the files it recorded before are skipped in
# SQL), so it counts what it sees from zero; `queued` keeps counting what the run queued.
RESTART_SCAN = """
UPDATE ingest_runs SET scanned = 0, skipped = 0, scan_errors = 0, state = 'scanning',
    error = NULL, scan_finished_at = NULL, scan_job_id = %(job)s, updated_at = now()
WHERE id = %(id)s
"""

FINISH_SCAN = """
UPDATE ingest_runs SET state = %(state)s, error = %(error)s, scan_finished_at = now(),
    updated_at = now()
WHERE id = %(id)s
"""

FILE_COLUMNS = """
f.source_id, f.path, f.media_id, f.run_id, f.batch_id, f.size, f.mtime_ns, f.etag, f.status,
f.error_code, f.error_message, f.attempts, f.sha256, f.updated_at, f.processed_at
"""

# One batch of the scan, in one statement. Paths known with the same size, mtime and etag
# are dropped by the lookup in ``fresh`` (an index probe each, no row locked or written:
# a re-scan of an unchanged tree writes nothing); the rest are inserted (pending, a new v4
# media id) or, when a concurrent scan inserted them meanwhile or they changed, set back to
# pending with their media id kept. The k-th fresh path (in input order) goes to batch
# %(batches)s[(k - 1) / %(batch_size)s + 1] as it is written: the ids are made beforehand
# for the most batches the paths could need, and the caller enqueues the jobs of those this
# returns. Setting batch_id in a second statement rewrote every row (batch_id is indexed,
# so no HOT update): 10k new paths took 0.52 s that way, 0.21 s this way (this machine).
# The arrays go in binary (%(...)b): psycopg's text format quotes each element with a regex,
# 21 ms of the scanner's CPU per 10k paths; binary takes 6 ms (a rescan of 1M unchanged
# paths spent half its client CPU there).
# Returns (batch_id, files) per batch used, in batch order.
RECORD_SCANNED = """
WITH input AS (
    SELECT * FROM unnest(%(paths)b::text[], %(sizes)b::bigint[], %(mtimes)b::bigint[],
                         %(etags)b::text[]) WITH ORDINALITY AS i (path, size, mtime_ns, etag, n)
),
fresh AS (
    SELECT i.*, row_number() OVER (ORDER BY i.n) AS k FROM input AS i
    LEFT JOIN LATERAL (
        SELECT k.size, k.mtime_ns, k.etag FROM ingest_files AS k
        WHERE k.source_id = %(source)s AND k.path = i.path
        LIMIT 1
    ) AS f ON true
    WHERE f IS NULL
       OR (f.size, f.mtime_ns, f.etag) IS DISTINCT FROM (i.size, i.mtime_ns, i.etag)
),
written AS (
    INSERT INTO ingest_files AS f
        (source_id, path, media_id, run_id, batch_id, size, mtime_ns, etag)
    SELECT %(source)s, path, gen_random_uuid(), %(run)s,
           (%(batches)b::uuid[])[(k - 1) / %(batch_size)s + 1], size, mtime_ns, etag
    FROM fresh
    ORDER BY path  -- rows locked in path order, as a batch's closing transaction takes them
    ON CONFLICT (source_id, path) DO UPDATE SET
        run_id = excluded.run_id, size = excluded.size, mtime_ns = excluded.mtime_ns,
        etag = excluded.etag, status = 'pending', attempts = 0, error_code = NULL,
        error_message = NULL, batch_id = excluded.batch_id, updated_at = now()
    WHERE (f.size, f.mtime_ns, f.etag)
        IS DISTINCT FROM (excluded.size, excluded.mtime_ns, excluded.etag)
    RETURNING f.batch_id
),
touched AS (
    UPDATE ingest_runs SET updated_at = now()
    WHERE id = %(run)s AND (SELECT count(*) FROM written) > 0
)
SELECT batch_id, count(*) AS files FROM written
GROUP BY batch_id
ORDER BY array_position(%(batches)b::uuid[], batch_id)
"""

ASSIGN_BATCHES = """
UPDATE ingest_files AS f SET batch_id = b.batch_id, updated_at = now()
FROM unnest(%(batches)b::uuid[], %(paths)b::text[]) AS b (batch_id, path)
WHERE f.source_id = %(source)s AND f.path = b.path
"""

# A batch's still-open files take one more attempt (before any decode).
START_BATCH = f"""
UPDATE ingest_files AS f SET attempts = attempts + 1, updated_at = now()
WHERE batch_id = %s AND status IN {OPEN}
RETURNING {FILE_COLUMNS}
"""

# The outcomes of a batch, fenced by batch_id: a file a rescan moved to another batch (or
# out of any) is left alone. A deferred file gets its new size and mtime and its new batch,
# and gives back the attempt start_batch counted (it was never decoded).
FINISH_BATCH = """
WITH changed AS (
    UPDATE ingest_files AS f SET
        status = o.status,
        error_code = o.error_code,
        error_message = o.error_message,
        size = coalesce(o.size, f.size),
        mtime_ns = coalesce(o.mtime_ns, f.mtime_ns),
        sha256 = coalesce(o.sha256, f.sha256),
        batch_id = o.batch_id,
        attempts = CASE WHEN o.status = 'pending' THEN greatest(f.attempts - 1, 0)
                        ELSE f.attempts END,
        processed_at = CASE WHEN o.status = 'indexed' THEN now() ELSE f.processed_at END,
        updated_at = now()
    FROM unnest(%(paths)s::text[], %(statuses)s::ingest_status[], %(codes)s::text[],
                %(messages)s::text[], %(sizes)s::bigint[], %(mtimes)s::bigint[],
                %(sha256s)s::text[], %(batches)s::uuid[])
        AS o (path, status, error_code, error_message, size, mtime_ns, sha256, batch_id)
    WHERE f.batch_id = %(batch)s AND f.path = o.path
    RETURNING f.run_id
),
touched AS (
    UPDATE ingest_runs SET updated_at = now()
    WHERE id = ANY(ARRAY(SELECT DISTINCT run_id FROM changed))
)
SELECT count(*) AS n FROM changed
"""

# media.embed finished these items: their files move indexed -> ai_done (a file a rescan
# re-queued meanwhile is pending again and stays so). The run rows are not touched.
MARK_AI_DONE = """
UPDATE ingest_files SET status = 'ai_done', updated_at = now()
WHERE media_id = ANY(%(ids)s::uuid[]) AND status = 'indexed'
"""

FAIL_BATCH = f"""
WITH changed AS (
    UPDATE ingest_files SET status = 'failed', error_code = %(code)s,
        error_message = %(message)s, batch_id = NULL, updated_at = now()
    WHERE batch_id = %(batch)s AND status IN {OPEN}
    RETURNING run_id
),
touched AS (
    UPDATE ingest_runs SET updated_at = now()
    WHERE id = ANY(ARRAY(SELECT DISTINCT run_id FROM changed))
)
SELECT count(*) AS n FROM changed
"""

# A file is stranded when it is open but no queued or running job will take it: its batch
# job failed, was cancelled, or is gone (archived), or it has no batch (a NULL batch_id
# matches no job, so NOT EXISTS holds; written without an OR, the planner makes it a hash
# anti-join). No index of the open files: a scan of ingest_files, on demand. {scope} is
# the run's files (``stranded``) or the source's (a retry page).
STRANDED_WHERE = f"""
{{scope}} AND f.status IN {OPEN}
AND NOT EXISTS (
    SELECT 1 FROM jobs AS j WHERE j.id = f.batch_id AND j.state IN ('queued', 'running'))
"""
STRANDED = "SELECT count(*) AS n FROM ingest_files AS f WHERE " + STRANDED_WHERE.format(
    scope="f.run_id = %(run)s"
)
SOURCE_STRANDED_WHERE = STRANDED_WHERE.format(scope="f.source_id = %(source)s")
# The source's stranded files, whichever run queued them, and those of the run %(run)s.
SOURCE_STRANDED = f"""
SELECT count(*) AS n, count(*) FILTER (WHERE f.run_id = %(run)s) AS run_n
FROM ingest_files AS f WHERE {SOURCE_STRANDED_WHERE}
"""

# One page of `ingest retry`: at most %(limit)s of the source's failed files by path,
# whichever of its runs queued them (index ingest_files_source_failed_path_idx, or
# ingest_files_source_failed_idx with a code: a rescan leaves an unchanged failed file
# with its old run), back to pending in the run %(run)s, attempts 0, error and batch
# cleared. Without a code, a page the failed files do not fill takes the source's stranded
# files too (the scan of SOURCE_STRANDED_WHERE runs only then: an InitPlan gates it). Only
# while the source is still the owner %(owner)s's (the run's): a source left free and
# claimed by another owner since holds that owner's files (SourceReowned checks first). The
# picked rows are locked in path order, and the UPDATE checks them again, so a file a batch
# finished meanwhile is left alone. Lock order as above: files, runs (the retry's and the
# ones the files leave), counters.
RETRY_PAGE = f"""
WITH owned AS (
    SELECT EXISTS (
        SELECT 1 FROM ingest_sources WHERE id = %(source)s AND owner_id = %(owner)s) AS yes
),
failed AS (
    SELECT f.source_id, f.path, f.run_id FROM ingest_files AS f
    WHERE (SELECT yes FROM owned) AND f.source_id = %(source)s AND f.status = 'failed' {{code}}
    ORDER BY f.path LIMIT %(limit)s
    FOR UPDATE
),
stranded AS (
    SELECT f.source_id, f.path, f.run_id FROM ingest_files AS f
    WHERE {{stranded}} AND (SELECT yes FROM owned) AND (SELECT count(*) FROM failed) < %(limit)s
      AND {SOURCE_STRANDED_WHERE}
    ORDER BY f.path LIMIT %(limit)s
    FOR UPDATE
),
picked AS (
    SELECT * FROM failed
    UNION ALL
    SELECT * FROM stranded
    ORDER BY path LIMIT %(limit)s
),
changed AS (
    UPDATE ingest_files AS f SET status = 'pending', attempts = 0, error_code = NULL,
        error_message = NULL, batch_id = NULL, run_id = %(run)s, updated_at = now()
    FROM picked AS p
    WHERE f.source_id = p.source_id AND f.path = p.path
      AND (f.status = 'failed' OR ({SOURCE_STRANDED_WHERE}))
    RETURNING f.path, p.run_id AS left_run
),
touched AS (
    UPDATE ingest_runs SET updated_at = now()
    WHERE id = ANY(ARRAY(SELECT left_run FROM changed UNION SELECT %(run)s::uuid FROM changed))
)
SELECT path FROM changed ORDER BY path
"""
RETRY_PAGE_ALL = RETRY_PAGE.format(code="", stranded="true")
RETRY_PAGE_CODE = RETRY_PAGE.format(code="AND f.error_code = %(code)s", stranded="false")
RETRY_PAGE_STRANDED = RETRY_PAGE.format(code="AND false", stranded="true")
RETRY_PAGE_UNKNOWN = RETRY_PAGE.format(code="AND coalesce(f.error_code, '') = ''", stranded="false")

# A page of a source's failed files by path (whichever run queued them): walks
# ingest_files_source_failed_path_idx (or, with a code, ingest_files_source_failed_idx) in
# order, so a page reads `limit` entries, sorts nothing.
FAILED_FILES = f"""
SELECT {FILE_COLUMNS} FROM ingest_files AS f
WHERE f.source_id = %(source)s AND f.status = 'failed' AND f.path > %(after)s {{code}}
ORDER BY f.path LIMIT %(limit)s
"""
FAILED_FILES_ALL = FAILED_FILES.format(code="")
FAILED_FILES_CODE = FAILED_FILES.format(code="AND f.error_code = %(code)s")

# A source's failed files per code, whichever run queued them: O(failed files), through
# ingest_files_source_failed_idx.
SOURCE_FAILURES = """
SELECT coalesce(error_code, '') AS error_code, count(*) AS files FROM ingest_files
WHERE source_id = %(source)s AND status = 'failed'
GROUP BY 1 ORDER BY 1
"""

# What ``ingest status`` and every progress event show, without reading the run's file
# rows: the counters the triggers keep, per status and (failed files) error code.
RUN_COUNTS = "SELECT status, error_code, files FROM ingest_counts WHERE run_id = %s"

# A retried batch reads its files without counting an attempt on all of them ...
READ_BATCH = f"""
SELECT {FILE_COLUMNS} FROM ingest_files AS f
WHERE batch_id = %s AND status IN {OPEN}
"""

# ... and counts one on each file right before its decode, committed on its own.
RECORD_ATTEMPT = f"""
UPDATE ingest_files SET attempts = attempts + 1, updated_at = now()
WHERE batch_id = %(batch)s AND path = %(path)s
  AND status IN {OPEN}
RETURNING attempts
"""

GIVE_BACK_ATTEMPTS = f"""
UPDATE ingest_files SET attempts = greatest(attempts - 1, 0), updated_at = now()
WHERE batch_id = %(batch)s AND path = ANY(%(paths)s::text[])
  AND status IN {OPEN}
"""

# The batch's closing transaction first takes the job's row while this attempt still runs
# it: FOR KEY SHARE makes the lease recovery and the claims (FOR UPDATE SKIP LOCKED) pass it
# by, without blocking the heartbeat's and progress's updates of the row.
HOLD_ATTEMPT = """
SELECT id FROM jobs
WHERE id = %(batch)s AND attempt = %(attempt)s AND state = 'running'
FOR KEY SHARE
"""

# ... then the listed files still open in the batch, in path order.
HOLD_BATCH = f"""
SELECT f.path FROM ingest_files AS f
WHERE f.batch_id = %(batch)s AND f.path = ANY(%(paths)s::text[])
  AND f.status IN {OPEN}
ORDER BY f.path
FOR UPDATE OF f
"""
