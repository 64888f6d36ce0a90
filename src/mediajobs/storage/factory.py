"""The composition roots' way to the configured stores: ``stores_for(settings)`` opens the
active store and every previous one from ``Settings``, as a ``StoreRegistry`` (the caller
closes it)."""

from __future__ import annotations

import contextlib
import hmac
import logging
import secrets
from pathlib import Path

import httpx

from mediajobs.config import Settings, StorageKind, StorageSettings
from mediajobs.errors import StoreNotConfigured
from mediajobs.storage.base import Store
from mediajobs.storage.local import LocalStore
from mediajobs.storage.memory import MemoryStore
from mediajobs.storage.memory_remote import RemoteMemoryStore
from mediajobs.storage.registry import StoreRegistry

log = logging.getLogger(__name__)

PROBE_TIMEOUT = 2.0  # seconds a worker waits for the API's answer at start-up
PROBE_PREFIX = "_mediajobs/shared/"  # the start-up probe's keys (deleted at once)


def memory_base_url(settings: Settings) -> str:
    """Where the service serves the memory store: this process's /storage."""
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    return f"http://{host}:{settings.port}/storage"


def memory_secret(settings: Settings) -> bytes | None:
    """The key that signs memory-store writes, derived from MEDIAJOBS_JWT_SECRET so that the
    API and a separate worker agree (None: a random key, private to the process)."""
    if not settings.jwt_secret:
        return None
    return hmac.new(settings.jwt_secret.encode(), b"mediajobs memory store v1", "sha256").digest()


def stores_for(
    settings: Settings, *, remote_memory: bool = False, direct: bool = True
) -> StoreRegistry:
    """The configured stores (active and previous) of a deployment. ``remote_memory``: this
    process does not serve the memory store (a worker): reach it over HTTP instead, or,
    when the API keeps it in this machine's directory (``shares_directory``), write that
    directory directly; ``direct=False`` always goes over HTTP (``storage check`` tests the
    API's ``/storage``). In development the memory store keeps its objects under
    ``<MEDIAJOBS_DATA_DIR>/storage`` (``Settings.memory_store_directory``)."""
    return open_stores(
        settings.storage,
        memory_base_url=memory_base_url(settings),
        memory_secret=memory_secret(settings),
        remote_memory=remote_memory,
        memory_directory=None if remote_memory and not direct else settings.memory_store_directory,
    )


def shares_directory(base_url: str, directory: Path) -> bool:
    """Whether the memory store served at ``base_url`` (the API's ``/storage``) keeps its
    objects in ``directory`` on this machine: a probe object with random bytes is written
    into the directory and must come back, byte for byte, from the API over HTTP; it is
    then deleted. A copy of the directory, another machine's, an API that keeps its objects
    in memory, one running as a user that cannot read this process's files, or an API that
    does not answer (not started yet) all fail it, and the worker goes through HTTP for its
    whole life. Checked once, at start-up: an API restarted meanwhile on another directory
    is not noticed."""
    store = LocalStore(base_url, directory)
    key = f"{PROBE_PREFIX}{secrets.token_hex(16)}"
    token = secrets.token_bytes(32)
    try:
        store.write_now(key, token, "application/octet-stream")
    except OSError:
        return False
    try:
        response = httpx.get(f"{base_url.rstrip('/')}/{key}", timeout=PROBE_TIMEOUT)
        return response.status_code == 200 and response.content == token
    except httpx.HTTPError:
        return False
    finally:
        with contextlib.suppress(OSError):
            store.remove_now(key)


def open_store(
    settings: StorageSettings,
    *,
    memory_base_url: str,
    memory_secret: bytes | None = None,
    remote_memory: bool = False,
    memory_directory: Path | None = None,
) -> Store:
    """One store from its settings (the composition roots call this, then close it).
    ``memory_directory``: the memory store keeps its objects there (a ``LocalStore``)
    rather than in this process only."""
    if settings.kind is StorageKind.MEMORY:
        base = settings.public_base_url or memory_base_url
        if remote_memory:
            if memory_secret is None:
                raise StoreNotConfigured(
                    "a worker apart from the API reaches the memory store with a key derived "
                    "from MEDIAJOBS_JWT_SECRET: set it (the same for both)"
                )
            if memory_directory is not None and shares_directory(base, memory_directory):
                # The API keeps its objects in this machine's directory: write it directly,
                # as the API does (no HTTP request, no second process, per object).
                log.info("development store: %s is the API's; written directly", memory_directory)
                return LocalStore(
                    base, memory_directory, secret=memory_secret, provider=settings.name
                )
            if memory_directory is not None:
                log.info(
                    "development store: %s is not the API's directory (or the API is not up "
                    "yet): objects go to %s over HTTP",
                    memory_directory,
                    base,
                )
            return RemoteMemoryStore(base, secret=memory_secret, provider=settings.name)
        if memory_directory is not None:
            return LocalStore(base, memory_directory, secret=memory_secret, provider=settings.name)
        return MemoryStore(base, secret=memory_secret, provider=settings.name)
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


def open_stores(
    settings: StorageSettings,
    *,
    memory_base_url: str,
    memory_secret: bytes | None = None,
    remote_memory: bool = False,
    memory_directory: Path | None = None,
) -> StoreRegistry:
    """The active store plus every previous one, as a registry."""

    def one(store: StorageSettings) -> Store:
        return open_store(
            store,
            memory_base_url=memory_base_url,
            memory_secret=memory_secret,
            remote_memory=remote_memory,
            memory_directory=memory_directory,
        )

    return StoreRegistry(one(settings), [one(previous) for previous in settings.previous])
