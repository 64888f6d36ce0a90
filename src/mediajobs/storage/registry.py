"""Reads and deletes follow each locator's own store; new writes go to the active one.

A deployment that moves from Lightsail to S3 (or to GCS) keeps the old store configured
as a previous store: objects written before the move stay readable and deletable through
their locators, while every new object lands in the active store.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable

from mediajobs.errors import StoreNotConfigured
from mediajobs.storage.base import CHUNK_SIZE, Locator, ObjectInfo, Store


class StoreRegistry:
    def __init__(self, active: Store, previous: Iterable[Store] = ()) -> None:
        self._active = active
        self._stores: dict[tuple[str, str], Store] = {}
        for store in (*previous, active):
            self._stores[(store.provider, store.bucket)] = store

    @property
    def active(self) -> Store:
        """Where new objects are written."""
        return self._active

    @property
    def stores(self) -> list[Store]:
        return list(self._stores.values())

    def locate(self, key: str) -> Locator:
        """The locator a new object under ``key`` gets (in the active store)."""
        return self._active.locator(key)

    def resolve(self, locator: Locator) -> Store:
        """The store that holds ``locator``'s object."""
        store = self._stores.get((locator.provider, locator.bucket))
        if store is None:
            raise StoreNotConfigured(
                f"no store is configured for {locator.provider}://{locator.bucket}"
            )
        return store

    async def url(self, locator: Locator, *, expires_in: float = 3600.0) -> str:
        return await self.resolve(locator).url(locator.key, expires_in=expires_in)

    def public_url(self, locator: Locator) -> str | None:
        """The permanent public URL of ``locator``'s object, or None (a private bucket)."""
        return self.resolve(locator).public_url(locator.key)

    def open(self, locator: Locator, *, chunk_size: int = CHUNK_SIZE) -> AsyncIterator[bytes]:
        return self.resolve(locator).open(locator.key, chunk_size=chunk_size)

    async def download(self, locator: Locator) -> bytes:
        return await self.resolve(locator).download(locator.key)

    async def head(self, locator: Locator) -> ObjectInfo | None:
        return await self.resolve(locator).head(locator.key)

    async def delete(self, locator: Locator) -> None:
        await self.resolve(locator).delete(locator.key)

    async def close(self) -> None:
        for store in self._stores.values():
            await store.close()
