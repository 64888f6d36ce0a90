"""Public URLs of stored media: the one place that turns an item's variant locators into the
URLs clients load (the API's media items and the result of a ``media.process`` job)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mediajobs.storage.base import Locator
from mediajobs.storage.registry import StoreRegistry
from mediajobs.types import JSON


async def variant_urls(
    variants: Mapping[str, Mapping[str, Any]], stores: StoreRegistry
) -> tuple[dict[str, JSON], str | None]:
    """Each variant (``{locator, width, height, ...}`` as an item stores it) as ``{url, width,
    height}``, and the URL of the largest (an item's main ``url``). URLs come from each
    locator's own store; variants that share an object get its URL once."""
    urls: dict[str, str] = {}
    shown: dict[str, JSON] = {}
    main: str | None = None
    largest = -1
    for name, variant in variants.items():
        locator = variant["locator"]
        if locator not in urls:
            urls[locator] = await stores.url(Locator.parse(locator))
        width, height = int(variant["width"]), int(variant["height"])
        shown[name] = {"url": urls[locator], "width": width, "height": height}
        if width * height > largest:
            largest, main = width * height, urls[locator]
    return shown, main
