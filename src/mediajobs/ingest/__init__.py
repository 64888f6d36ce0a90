"""Bulk ingest (issue 16, docs/ingest.md): walking a directory tree or a bucket prefix into
the checkpoint, and reading each file back for its batch.

``scan.py`` walks (a generator over ``os.scandir``, or a bucket's pages); ``source.py``
names a source (``parse_source``), walks it in batches (``scan_source``) and reads its
files (``check_file``, ``read_file``). The job handlers are in ``handlers/ingest.py``.
"""

from __future__ import annotations

from mediajobs.ingest.scan import (
    APPROVED_EXTENSIONS,
    ScanCounts,
    ScannedFile,
    batched,
    is_approved,
    walk_bucket,
    walk_directory,
)
from mediajobs.ingest.source import (
    SCAN_BATCH_SECONDS,
    SCAN_BATCH_SIZE,
    FileChanged,
    FileCheck,
    FileLike,
    FileState,
    FileTooLarge,
    FileUnreadable,
    FileVanished,
    ScanBatch,
    Source,
    SourceFileError,
    SourceInvalid,
    check_file,
    parse_source,
    read_file,
    scan_source,
    settled,
    stat_file,
)

__all__ = [
    "APPROVED_EXTENSIONS",
    "SCAN_BATCH_SECONDS",
    "SCAN_BATCH_SIZE",
    "FileChanged",
    "FileCheck",
    "FileLike",
    "FileState",
    "FileTooLarge",
    "FileUnreadable",
    "FileVanished",
    "ScanBatch",
    "ScanCounts",
    "ScannedFile",
    "Source",
    "SourceFileError",
    "SourceInvalid",
    "batched",
    "check_file",
    "is_approved",
    "parse_source",
    "read_file",
    "scan_source",
    "settled",
    "stat_file",
    "walk_bucket",
    "walk_directory",
]
