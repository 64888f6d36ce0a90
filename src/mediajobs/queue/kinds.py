"""The job kinds of this platform: the names the service enqueues and the workers handle."""

from __future__ import annotations

PING = "system.ping"
MEDIA_PROCESS = "media.process"  # an upload into variants (events: upload_*)
MEDIA_REVIEW = "media.review"  # the review gate (review_*)
MEDIA_DELETE = "media.delete"  # hide now, purge after the undo window (delete_*)
MEDIA_PURGE = "media.purge"  # delete every object of a deleted item (delete_*)
