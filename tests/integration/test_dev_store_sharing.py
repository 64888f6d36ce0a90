"""A worker beside the API in development writes the development store's directory directly
when it is the API's own (a probe object written into the directory comes back from the
API over HTTP), and goes through HTTP otherwise."""

from __future__ import annotations

import shutil
from pathlib import Path

from starlette.applications import Starlette
from starlette.routing import Mount

from mediajobs.config import StorageKind, StorageSettings
from mediajobs.storage import LocalStore, MemoryStore, Store
from mediajobs.storage.factory import open_store
from mediajobs.storage.memory_remote import RemoteMemoryStore
from tests.conftest import free_port
from tests.support.http import serve_in_thread

SECRET = b"k" * 32
MEMORY = StorageSettings(kind=StorageKind.MEMORY)


def worker_store(base: str, directory: Path) -> Store:
    return open_store(
        MEMORY,
        memory_base_url=base,
        memory_secret=SECRET,
        remote_memory=True,
        memory_directory=directory,
    )


async def test_a_worker_writes_the_apis_directory_directly_and_the_api_serves_it(
    tmp_path: Path,
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}/storage"
    api_store = LocalStore(base, tmp_path / "storage", secret=SECRET)
    await api_store.upload("catalog/old.jpg", b"old", "image/jpeg")
    with serve_in_thread(Starlette(routes=[Mount("/storage", app=api_store.app())]), port):
        store = worker_store(base, tmp_path / "storage")
        assert type(store) is LocalStore
        assert [i.key for i in (await api_store.list()).items] == ["catalog/old.jpg"]  # no probe
        stored = await store.upload("catalog/a.jpg", b"jpeg bytes", "image/jpeg")
        assert await api_store.download("catalog/a.jpg") == b"jpeg bytes"
        head = await api_store.head("catalog/a.jpg")
        assert head is not None and head.etag == stored.etag

        # A copy of the directory (another checkout, a restored backup) is not the API's.
        shutil.copytree(tmp_path / "storage", tmp_path / "copy")
        copied = worker_store(base, tmp_path / "copy")
        assert type(copied) is RemoteMemoryStore
        await copied.upload(
            "catalog/b.jpg", b"more", "image/jpeg", cache_control="public, no-cache"
        )
        await copied.close()
        assert await api_store.download("catalog/b.jpg") == b"more"
        # The object keeps the upload's Cache-Control over HTTP too.
        kept = await api_store.get("catalog/b.jpg")
        assert kept is not None and kept.cache_control == "public, no-cache"


async def test_a_worker_goes_through_http_when_the_api_keeps_objects_in_memory_or_is_down(
    tmp_path: Path,
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}/storage"
    in_memory = MemoryStore(base, secret=SECRET)
    with serve_in_thread(Starlette(routes=[Mount("/storage", app=in_memory.app())]), port):
        store = worker_store(base, tmp_path / "storage")
        assert type(store) is RemoteMemoryStore
        await store.close()
    down = worker_store(f"http://127.0.0.1:{free_port()}/storage", tmp_path / "storage")
    assert type(down) is RemoteMemoryStore
    await down.close()
    assert await LocalStore(base, tmp_path / "storage").list() == (
        await LocalStore(base, tmp_path / "empty").list()
    )  # the probes were deleted
