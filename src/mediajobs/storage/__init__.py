"""Object storage: one ``Store`` interface over memory, S3/Lightsail and GCS, locators, and
the registry that resolves each locator to its own store."""

from __future__ import annotations

from mediajobs.config import Settings, StorageKind, StorageSettings
from mediajobs.storage.base import (
    Locator,
    MediaObject,
    ObjectInfo,
    ObjectPage,
    PresignedUpload,
    Store,
    StoredObject,
    UploadData,
)
from mediajobs.storage.check import CheckReport, check_store
from mediajobs.storage.memory import MemoryStorageApp, MemoryStore
from mediajobs.storage.registry import StoreRegistry

__all__ = [
    "CheckReport",
    "Locator",
    "MediaObject",
    "MemoryStorageApp",
    "MemoryStore",
    "ObjectInfo",
    "ObjectPage",
    "PresignedUpload",
    "Store",
    "StoreRegistry",
    "StoredObject",
    "UploadData",
    "check_store",
    "memory_base_url",
    "open_store",
    "open_stores",
    "stores_for",
]


def memory_base_url(settings: Settings) -> str:
    """Where the service serves the memory store: this process's /storage."""
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    return f"http://{host}:{settings.port}/storage"


def stores_for(settings: Settings) -> StoreRegistry:
    """The configured stores (active and previous) of a deployment."""
    return open_stores(settings.storage, memory_base_url=memory_base_url(settings))


def open_store(settings: StorageSettings, *, memory_base_url: str) -> Store:
    """One store from its settings (the composition roots call this, then close it)."""
    if settings.kind is StorageKind.MEMORY:
        return MemoryStore(settings.public_base_url or memory_base_url, provider=settings.name)
    assert settings.bucket is not None
    if settings.kind is StorageKind.S3:
        from mediajobs.storage.s3 import S3Store, make_client

        client = make_client(
            endpoint_url=settings.endpoint_url,
            region=settings.region,
            force_path_style=settings.force_path_style,
            profile=settings.profile,
        )
        return S3Store(
            client,
            settings.bucket,
            provider=settings.name,
            public_base_url=settings.public_base_url,
            upload_method=settings.upload_method,
        )
    from mediajobs.storage.gcs import GCSStore, emulator_endpoint
    from mediajobs.storage.gcs import make_client as make_gcs_client

    gcs_client, signer = make_gcs_client(
        service_account_json=settings.gcs_service_account_json,
        emulator_host=settings.emulator_host,
    )
    endpoint = emulator_endpoint(settings.emulator_host) if settings.emulator_host else None
    return GCSStore(
        gcs_client,
        settings.bucket,
        signer=signer,
        provider=settings.name,
        public_base_url=settings.public_base_url,
        signed_url_endpoint=endpoint,
    )


def open_stores(settings: StorageSettings, *, memory_base_url: str) -> StoreRegistry:
    """The active store plus every previous one, as a registry."""
    return StoreRegistry(
        open_store(settings, memory_base_url=memory_base_url),
        [open_store(previous, memory_base_url=memory_base_url) for previous in settings.previous],
    )
