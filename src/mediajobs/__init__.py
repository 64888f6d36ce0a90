"""mediajobs: every media operation is an asynchronous job.

A request returns a job id at once; workers take the job from a PostgreSQL queue,
do the work and publish real progress. See ``docs/architecture.md``.
"""

from __future__ import annotations

__version__ = "0.1.0"
