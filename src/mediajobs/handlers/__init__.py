"""Job handlers, one module per concept, and the registry the worker runs: ``process.py``
(``media.process``), ``review.py`` (``media.review`` and its ``Reviewer``s), ``delete.py``
(``media.delete``, ``media.purge``), ``media.py`` (registers the four), ``system.py``
(``system.ping``), ``ingest.py`` (``ingest.scan``, ``ingest.batch``), ``imaging_pool.py``
(the crash-isolated imaging processes).

``build_registry(resources)`` (``wiring.py``) is the default ``--app`` of ``mediajobs
worker``: the worker's composition root (``cli.worker.open_worker``) opens the
``WorkerResources`` (database pool, stores, imaging pool, HTTP client), passes them in, and
closes them after the worker stops. Handlers never build a resource of their own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mediajobs.lazy import lazy_names

if TYPE_CHECKING:
    from mediajobs.handlers.ingest import IngestHandlers
    from mediajobs.handlers.media import MediaHandlers
    from mediajobs.handlers.system import PING_KIND
    from mediajobs.handlers.wiring import (
        WorkerResources,
        build_registry,
        ingest_handlers,
        media_handlers,
    )

_EXPORTS = {
    "PING_KIND": "mediajobs.handlers.system",
    "IngestHandlers": "mediajobs.handlers.ingest",
    "MediaHandlers": "mediajobs.handlers.media",
    "WorkerResources": "mediajobs.handlers.wiring",
    "build_registry": "mediajobs.handlers.wiring",
    "ingest_handlers": "mediajobs.handlers.wiring",
    "media_handlers": "mediajobs.handlers.wiring",
}


__getattr__ = lazy_names(__name__, _EXPORTS)

__all__ = [
    "PING_KIND",
    "IngestHandlers",
    "MediaHandlers",
    "WorkerResources",
    "build_registry",
    "ingest_handlers",
    "media_handlers",
]
