"""``mediajobs storage check``: probe the store the server uses (in development, the
memory store of the running server, over HTTP)."""

from __future__ import annotations

import argparse
import asyncio

from mediajobs.cli.common import Commands
from mediajobs.config import Settings, StorageKind
from mediajobs.devenv import with_dev_secret
from mediajobs.errors import StorageError
from mediajobs.storage.check import check_store
from mediajobs.storage.factory import memory_base_url, stores_for


def add_storage(commands: Commands) -> None:
    """The ``storage`` command's parser and its ``check`` subcommand."""
    storage = commands.add_parser("storage", help="check: probe the store the server uses")
    storage_commands = storage.add_subparsers(dest="storage_command", required=True)
    storage_commands.add_parser(
        "check",
        help="write, read, list, sign and delete a probe object in the bucket (in development: "
        "in the running server's development store, files under MEDIAJOBS_DATA_DIR/storage, "
        "default .mediajobs/storage, reached over HTTP)",
    ).set_defaults(handler=cmd_storage_check)


def cmd_storage_check(args: argparse.Namespace, settings: Settings) -> int:
    """The active bucket: a full probe. Previous buckets (read and delete only): a listing.

    The memory store (development) is served by the server process, so the probe goes to that
    process's ``/storage`` over HTTP (MEDIAJOBS_PORT names it), never to an empty store of
    this process; when nothing answers there, it says so."""
    settings = with_dev_secret(settings)  # the memory store's signing key derives from it
    remote = settings.storage.kind is StorageKind.MEMORY
    where = settings.storage.public_base_url or memory_base_url(settings)
    if remote:
        print(f"the memory store lives in the server process: checking the one at {where}")

    async def check() -> int:
        stores = stores_for(settings, remote_memory=remote, direct=False)
        try:
            report = await check_store(stores.active)
            for line in report.lines():
                print(line)
            if remote and report.error_code == "storage_unavailable":
                print(
                    f"nothing answers at {where}: the memory store is served only while "
                    "`make dev` (or `mediajobs serve`) runs; start it, or set MEDIAJOBS_PORT "
                    "to its port"
                )
            elif remote and report.error_code == "storage_denied":
                print(
                    f"the server at {where} refused the signed probe: it signs with another "
                    "key (MEDIAJOBS_JWT_SECRET, or the jwt-secret file of its "
                    "MEDIAJOBS_DATA_DIR): run this with the server's settings"
                )
            healthy = report.ok
            for store in stores.stores:
                if store is stores.active:
                    continue
                try:
                    page = await store.list("media/", limit=1)
                    print(
                        f"previous {store.provider}://{store.bucket}: ok (readable, "
                        f"{'has objects' if page.items else 'empty'})"
                    )
                except StorageError as exc:
                    healthy = False
                    print(f"previous {store.provider}://{store.bucket}: FAILED ({exc.code}): {exc}")
            return 0 if healthy else 1
        finally:
            await stores.close()

    return asyncio.run(check())
