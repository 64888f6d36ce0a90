"""Job handlers, one module per job kind family, and the registry the worker runs.

``build_registry(settings)`` is the default ``--app`` of ``mediajobs worker``.
"""

from __future__ import annotations

from mediajobs.config import Settings
from mediajobs.handlers.system import PING_KIND, ping
from mediajobs.queue.registry import HandlerRegistry


def build_registry(settings: Settings) -> HandlerRegistry:
    """Every handler this deployment runs."""
    registry = HandlerRegistry()
    registry.register(PING_KIND, ping)
    return registry


__all__ = ["PING_KIND", "build_registry"]
