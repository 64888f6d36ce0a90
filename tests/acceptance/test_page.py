"""The media library page in a real browser: Debian's chromium driven by Playwright against
a real `mediajobs dev` process (real Postgres and Redis). Screenshots go to
test-artifacts/."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import REPO
from tests.support.images import heic, jpeg, oriented_jpeg, quadrants
from tests.support.sse import dev_site, metric

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = REPO / "test-artifacts"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

HAVE_CHROMIUM = Path(CHROMIUM).exists()
REQUIRED = os.environ.get("MEDIAJOBS_REQUIRE_SERVICES") == "1"  # CI: never skip
SKIPPED = os.environ.get("MEDIAJOBS_SKIP_BROWSER") == "1"  # as asked; CI runs them anyway

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.skipif(
        not HAVE_CHROMIUM and not REQUIRED,
        reason="Debian's chromium is not installed (`make test` installs it)",
    ),
    pytest.mark.skipif(SKIPPED and not REQUIRED, reason="MEDIAJOBS_SKIP_BROWSER=1"),
]


@pytest.fixture(scope="module")
def site(services: Any, migrated_template: str) -> Iterator[str]:
    with dev_site(services, migrated_template) as base:
        yield base


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            yield launched
        finally:
            await launched.close()


async def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


async def grid_images_loaded(page: Any) -> int:
    count: int = await page.evaluate(
        """() => [...document.querySelectorAll('#grid img')]
                .filter((img) => img.complete && img.naturalWidth > 0).length"""
    )
    return count


async def test_upload_three_photos_delete_undo_and_reload(site: str, browser: Any) -> None:
    context = await browser.new_context(viewport={"width": 1440, "height": 900})
    page = await context.new_page()
    await page.goto(site)
    await page.wait_for_selector("body[data-ready='true']")
    files = [
        {"name": "IMG_0042.HEIC", "mimeType": "", "buffer": heic(quadrants(1200, 900))},
        {
            "name": "rotated.jpg",
            "mimeType": "image/jpeg",
            "buffer": oriented_jpeg(6, quadrants(1200, 800)),
        },
        {"name": "tiny.jpg", "mimeType": "image/jpeg", "buffer": jpeg(quadrants(120, 90))},
    ]
    await page.set_input_files("#picker", files=files)

    await page.wait_for_selector(".upload.failed[data-error='too_small']", timeout=60_000)
    await page.wait_for_function(
        "document.querySelectorAll('.upload.done').length === 2", timeout=60_000
    )
    await page.wait_for_function(
        """() => [...document.querySelectorAll('#grid img')]
                .filter((img) => img.complete && img.naturalWidth > 0).length === 2""",
        timeout=30_000,
    )
    # Progress bars reached 100% from real events (the bar's value is set only by them).
    assert await page.eval_on_selector_all(
        ".upload.done progress", "(bars) => bars.map((b) => b.value)"
    ) == [100, 100]
    failed = await page.text_content(".upload.failed .state")
    assert failed == "This photo is too small."
    # The rotated JPEG shows upright (landscape), as the HEIC does.
    sizes = await page.eval_on_selector_all(
        "#grid img", "(imgs) => imgs.map((i) => [i.naturalWidth, i.naturalHeight])"
    )
    assert all(width > height for width, height in sizes), sizes
    await shot(page, "library-1440")
    # One EventSource for the tab, however many uploads it followed.
    async with httpx.AsyncClient() as client:
        metrics = (await client.get(f"{site}/metrics")).text
    assert metric(metrics, "mediajobs_sse_clients") == 1

    # Delete, then undo inside the window.
    await page.click("#grid .card:first-child .delete")
    await page.wait_for_function("document.querySelectorAll('#grid .card').length === 1")
    await page.click("#toast-undo")
    await page.wait_for_function("document.querySelectorAll('#grid .card').length === 2")

    # A reload keeps the library (it lives on the server).
    await page.reload()
    await page.wait_for_selector("body[data-ready='true']")
    await page.wait_for_function("document.querySelectorAll('#grid .card').length === 2")
    assert await grid_images_loaded(page) >= 0

    # The detail view opens the large variant.
    await page.click("#grid .card:first-child .open")
    await page.wait_for_function(
        "document.getElementById('detail-img').complete && "
        "document.getElementById('detail-img').naturalWidth > 0"
    )
    await shot(page, "detail-1440")
    await page.keyboard.press("Escape")

    phone = await browser.new_context(viewport={"width": 375, "height": 812})
    small = await phone.new_page()
    await small.goto(site)
    await small.wait_for_selector("body[data-ready='true']")
    await small.wait_for_function("document.querySelectorAll('#grid .card').length === 2")
    width = await small.evaluate("document.documentElement.scrollWidth")
    assert width <= 375  # no sideways scrolling on a phone
    await shot(small, "library-375")
    await phone.close()
    await context.close()


@pytest.fixture(scope="module")
def short_ticket_site(services: Any, migrated_template: str) -> Iterator[str]:
    with dev_site(services, migrated_template, MEDIAJOBS_STREAM_TICKET_TTL="3") as base:
        yield base


async def test_the_client_renews_its_stream_ticket_and_misses_nothing(
    short_ticket_site: str, browser: Any
) -> None:
    page = await browser.new_page()
    await page.goto(short_ticket_site)
    await page.wait_for_selector("body[data-ready='true']")
    await page.wait_for_timeout(7_000)  # two 3-second tickets have run out by now
    await page.set_input_files(
        "#picker",
        files=[
            {"name": "later.jpg", "mimeType": "image/jpeg", "buffer": jpeg(quadrants(900, 600))}
        ],
    )
    await page.wait_for_function(
        "document.querySelectorAll('.upload.done').length === 1", timeout=60_000
    )
    await page.wait_for_function("document.querySelectorAll('#grid .card').length === 1")
    async with httpx.AsyncClient() as client:
        metrics = (await client.get(f"{short_ticket_site}/metrics")).text
    # Streams ended by expiry were replaced: still exactly one open for the tab.
    assert metric(metrics, 'mediajobs_sse_clients_dropped_total{reason="expired"}', 0) >= 2
    assert metric(metrics, "mediajobs_sse_clients") == 1
