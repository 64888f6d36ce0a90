-- Failures are a source's, not a run's (issue 16). A rescan queues only new and changed
-- files, so a file that failed in an earlier run keeps that run's id; `ingest report` and
-- `ingest retry` of the latest run missed it. They now walk the source's failed files, by
-- path (or by code and path), whichever run queued them; a retried file joins the run it
-- is retried in. These replace the per-run indexes of 0008, which nothing reads any more.
CREATE INDEX ingest_files_source_failed_path_idx ON ingest_files (source_id, path)
    WHERE status = 'failed';
CREATE INDEX ingest_files_source_failed_idx ON ingest_files (source_id, error_code, path)
    WHERE status = 'failed';
DROP INDEX ingest_files_failed_path_idx;
DROP INDEX ingest_files_failed_idx;
