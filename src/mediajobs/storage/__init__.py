"""Object storage: one ``Store`` interface over memory, S3/Lightsail and GCS, locators, and
the registry that resolves each locator to its own store.

``storage/factory.py`` opens the configured stores from ``Settings`` (the composition roots
call it); ``base.py`` holds the interface, ``memory.py``, ``local.py``, ``s3.py`` and
``gcs.py`` the stores.
"""

from __future__ import annotations

from mediajobs.storage.base import (
    Locator,
    ObjectInfo,
    ObjectPage,
    PresignedUpload,
    Store,
    StoredObject,
    UploadData,
)
from mediajobs.storage.local import LocalStore
from mediajobs.storage.memory import MemoryStore
from mediajobs.storage.registry import StoreRegistry

__all__ = [
    "LocalStore",
    "Locator",
    "MemoryStore",
    "ObjectInfo",
    "ObjectPage",
    "PresignedUpload",
    "Store",
    "StoreRegistry",
    "StoredObject",
    "UploadData",
]
