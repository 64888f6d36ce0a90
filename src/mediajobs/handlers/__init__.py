"""Job handlers, one module per job kind family, and the registry the worker runs.

``build_registry(settings)`` is the default ``--app`` of ``mediajobs worker``.
"""

from __future__ import annotations

from mediajobs.config import Settings
from mediajobs.handlers.media import MediaHandlers
from mediajobs.handlers.system import PING_KIND, ping
from mediajobs.queue.registry import HandlerRegistry
from mediajobs.storage import StoreRegistry


def build_registry(settings: Settings, *, stores: StoreRegistry | None = None) -> HandlerRegistry:
    """Every handler this deployment runs. ``stores`` shares a store registry with the API
    (dev mode, where the memory store lives in the one process); else the handlers open
    their own from the settings."""
    registry = HandlerRegistry()
    registry.register(PING_KIND, ping)
    MediaHandlers(settings, stores=stores).register(registry)
    return registry


__all__ = ["PING_KIND", "MediaHandlers", "build_registry"]
