"""Search in the media library page, in Debian's chromium against a real `mediajobs dev`:
the search box by meaning (the tiny model and the embedded Postgres's pgvector) and by words
(no model), and the "Similar" action on a photo."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.acceptance.test_page import BROWSER_MARKS, shot
from tests.acceptance.test_page import browser as browser  # the same fixture
from tests.support.images import jpeg, photo, quadrants
from tests.support.sse import bearer, realtime_env
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.timeout(240), *BROWSER_MARKS]

DEV = bearer("dev")  # the page's user in development


@contextlib.contextmanager
def site_on(admin_url: str, template: str, redis_url: str, **extra: str) -> Iterator[str]:
    from tests.conftest import create_database, drop_database
    from tests.support.serving import Serving

    name = f"site_{uuid.uuid4().hex[:8]}"
    url = create_database(admin_url, name, template=template)
    try:
        with Serving(realtime_env(url, redis_url, **extra), command="dev") as serving:
            yield serving.base
    finally:
        drop_database(admin_url, name)


@pytest.fixture(scope="module")
def semantic_site(
    vector_pg_admin_url: str, vector_template: str, services: Any, tiny_clip_dir: Path
) -> Iterator[str]:
    with site_on(
        vector_pg_admin_url,
        vector_template,
        services.redis_url,
        MEDIAJOBS_CLIP_MODEL_DIR=str(tiny_clip_dir),
    ) as base:
        yield base


@pytest.fixture(scope="module")
def words_site(services: Any, migrated_template: str) -> Iterator[str]:
    with site_on(services.pg_admin_url, migrated_template, services.redis_url) as base:
        yield base


async def upload_three(page: Any, site: str) -> dict[str, str]:
    """beach.jpg, a smaller copy of it, and city.jpg, through the picker; their ids once
    image understanding has tagged all three."""
    original = photo(1200, 900)
    files = [
        {"name": "beach.jpg", "mimeType": "image/jpeg", "buffer": jpeg(original)},
        {
            "name": "beach-small.jpg",
            "mimeType": "image/jpeg",
            "buffer": jpeg(original.resize((600, 450))),
        },
        {"name": "city.jpg", "mimeType": "image/jpeg", "buffer": jpeg(quadrants(900, 700))},
    ]
    await page.set_input_files("#picker", files=files)
    await page.wait_for_function(
        "document.querySelectorAll('#grid .card').length === 3", timeout=60_000
    )
    async with httpx.AsyncClient(base_url=site, headers=DEV) as client:

        async def tagged() -> bool:
            items = (await client.get("/media")).json()["items"]
            return len(items) == 3 and all(item["tags"] for item in items)

        await wait_for(tagged, timeout=60, interval=0.2)
        items = (await client.get("/media")).json()["items"]
    return {item["filename"]: item["id"] for item in items}


async def test_search_by_meaning_and_similar_photos(semantic_site: str, browser: Any) -> None:
    page = await browser.new_page(viewport={"width": 1440, "height": 900})
    await page.goto(semantic_site)
    await page.wait_for_selector("body[data-ready='true']")
    ids = await upload_three(page, semantic_site)
    async with httpx.AsyncClient(base_url=semantic_site, headers=DEV) as client:

        async def embedded() -> bool:
            found = await client.get("/media/search", params={"q": "beach"})
            return found.json()["mode"] == "semantic" and len(found.json()["items"]) == 3

        await wait_for(embedded, timeout=60, interval=0.2)

    await page.fill("#search-q", "a sunny beach")
    await page.press("#search-q", "Enter")
    await page.wait_for_function(
        "document.getElementById('search-status').textContent.includes('by meaning')"
    )
    status = await page.text_content("#search-status")
    assert status == "3 photos for “a sunny beach”, by meaning (model tiny-clip)."
    assert await page.text_content("#library-title") == "Search results"
    assert await page.is_visible("#search-clear")
    await shot(page, "search-1440")

    # "Similar" on beach.jpg: its smaller copy is the nearest photo.
    await page.click(f".card[data-id='{ids['beach.jpg']}'] .similar")
    await page.wait_for_function(
        "document.getElementById('library-title').textContent === 'Similar photos'"
    )
    await page.wait_for_function("document.querySelectorAll('#grid .card').length === 2")
    first = await page.get_attribute("#grid .card:first-child", "data-id")
    assert first == ids["beach-small.jpg"]
    assert "nearest first" in (await page.text_content("#search-status") or "")

    await page.click("#search-clear")
    await page.wait_for_function("document.querySelectorAll('#grid .card').length === 3")
    assert await page.text_content("#library-title") == "Your photos"
    assert await page.text_content("#search-status") == ""
    await page.close()


async def test_without_a_model_the_page_searches_by_words(words_site: str, browser: Any) -> None:
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    await page.goto(words_site)
    await page.wait_for_selector("body[data-ready='true']")
    ids = await upload_three(page, words_site)
    await page.fill("#search-q", "city")
    await page.click("#search button[type=submit]")
    await page.wait_for_function(
        "document.getElementById('search-status').textContent.includes('by words')"
    )
    assert "search by meaning is off" in (await page.text_content("#search-status") or "")
    await page.wait_for_function("document.querySelectorAll('#grid .card').length === 1")
    assert await page.get_attribute("#grid .card", "data-id") == ids["city.jpg"]

    # Similar needs embeddings: the page says so and shows the library again.
    await page.click("#search-clear")
    await page.wait_for_function("document.querySelectorAll('#grid .card').length === 3")
    await page.click(f".card[data-id='{ids['city.jpg']}'] .similar")
    await page.wait_for_selector("#toast:not([hidden])")
    assert "Search by meaning is off" in (await page.text_content("#toast-text") or "")
    assert await page.text_content("#library-title") == "Your photos"
    await page.close()
