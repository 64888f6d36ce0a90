"""Packages whose names load on first use (PEP 562 module ``__getattr__``).

An imaging process imports ``mediajobs.handlers.imaging_pool`` and
``mediajobs.queue.children``, and with them their packages: eager package imports would load
the database driver, the HTTP client and every handler there (1.3 CPU-s and tens of MB per
process). A package lists its names in ``TYPE_CHECKING`` imports (for type checkers) and in
a table for ``lazy_names``.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_names(package: str, names: Mapping[str, str]) -> Callable[[str], Any]:
    """The module ``__getattr__`` of ``package`` (its ``__name__``): ``names`` maps each
    exported name to the module that defines it, imported when the name is first asked
    for and then kept in the package. Raises ``AttributeError`` for any other name."""

    def __getattr__(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
