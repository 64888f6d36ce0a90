"""The job kinds of this platform: the names the service enqueues and the workers handle."""

from __future__ import annotations

PING = "system.ping"
MEDIA_PROCESS = "media.process"  # an upload into variants (events: upload_*)
MEDIA_REVIEW = "media.review"  # the review gate (review_*)
MEDIA_DELETE = "media.delete"  # hide now, purge after the undo window (delete_*)
MEDIA_PURGE = "media.purge"  # delete every object of a deleted item (delete_*)
INGEST_SCAN = "ingest.scan"  # walk a source, record its files, queue their batches (ingest_*)
INGEST_BATCH = "ingest.batch"  # import a batch of files (no job events: ingest_progress)
MEDIA_EMBED = "media.embed"  # understand ready images: hash, tags, embeddings (search.md)

# Claim order (higher first): ingest work yields to interactive uploads (priority 0), and a
# run's scan goes before its batches, so a run's total is known early.
INGEST_SCAN_PRIORITY = -5
INGEST_BATCH_PRIORITY = -10
# Image understanding never blocks baseline use (seed 000): it runs after everything else.
MEDIA_EMBED_PRIORITY = -20
