"""The media library page in a real browser: Debian's chromium driven by Playwright against
a real `mediajobs dev` process (real Postgres and Redis). Screenshots go to
test-artifacts/."""

from __future__ import annotations

import asyncio
import io
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from mediajobs.service.auth import Authenticator
from tests.conftest import REPO
from tests.support.images import encode, heic, jpeg, oriented_jpeg, photo, quadrants
from tests.support.sse import SECRET, bearer, dev_site, metric
from tests.support.waiting import wait_for

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

# Whether the browser tests run (shared with the other page modules).
BROWSER_MARKS = [
    pytest.mark.skipif(
        not HAVE_CHROMIUM and not REQUIRED,
        reason="Debian's chromium is not installed (`make test` installs it)",
    ),
    pytest.mark.skipif(SKIPPED and not REQUIRED, reason="MEDIAJOBS_SKIP_BROWSER=1"),
]
pytestmark = [pytest.mark.timeout(180), *BROWSER_MARKS]


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
    async with httpx.AsyncClient(base_url=short_ticket_site) as client:

        async def two_tickets_ran_out() -> bool:
            metrics = (await client.get("/metrics")).text
            return metric(metrics, 'mediajobs_sse_clients_dropped_total{reason="expired"}', 0) >= 2

        await wait_for(two_tickets_ran_out, timeout=60, interval=0.2)  # 3-second tickets
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


# -- failed items, retry, transparency, the rules line, the icon, a phone ----------------------

ADMIN = {"Authorization": f"Bearer {Authenticator(SECRET).issue_token('ops', roles=['admin'])}"}
DEV = bearer("dev")  # the page's user in development
CARD_BACKGROUND = (255, 255, 255)  # .card's background in app.css
CHECKER_LIGHT = (255, 255, 255)  # the detail view's checkerboard (app.css --checker-*)
CHECKER_DARK = (227, 227, 230)
RED = (230, 20, 20)


def half_transparent_png(width: int = 800, height: int = 600) -> bytes:
    """Left half fully transparent, right half opaque red: the blur placeholder of such an
    image is red, and smeared into the left half it is the halo."""
    image = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    image.paste((*RED, 255), (width // 2, 0, width, height))
    return encode(image, "PNG")


@pytest.fixture(scope="module")
def failure_site(services: Any, migrated_template: str) -> Iterator[str]:
    with dev_site(services, migrated_template) as base:
        yield base


class PageProblems:
    """Everything that went wrong loading a page: HTTP errors (the favicon's among them: a
    browser's own favicon request shows only as a console error), failed requests and
    console errors."""

    def __init__(self, page: Any) -> None:
        self.items: list[str] = []
        page.on("console", self._console)
        page.on("requestfailed", lambda r: self.items.append(f"failed {r.url} {r.failure}"))
        page.on(
            "response",
            lambda r: self.items.append(f"{r.status} {r.url}") if r.status >= 400 else None,
        )

    def _console(self, message: Any) -> None:
        if message.type == "error":
            self.items.append(f"console: {message.text}")


async def tile(page: Any, media_id: str) -> dict[str, Any]:
    """What one tile of the page shows."""
    shown: dict[str, Any] = await page.eval_on_selector(
        f".card[data-id='{media_id}']",
        """(card) => ({
            list: card.parentElement.id,
            reason: card.querySelector('.reason-text')?.textContent ?? null,
            code: card.querySelector('.reason code')?.textContent ?? null,
            badge: card.querySelector('.badge')?.textContent ?? null,
            buttons: [...card.querySelectorAll('.actions button')].map((b) => b.textContent),
        })""",
    )
    return shown


async def item_of(client: httpx.AsyncClient, status: str, filename: str) -> dict[str, Any]:
    listed = (await client.get("/media", params={"status": status}, headers=DEV)).json()
    [item] = [i for i in listed["items"] if i["filename"] == filename]
    return item  # type: ignore[no-any-return]


async def test_failed_items_say_why_offer_retry_when_retryable_and_survive_a_reload(
    failure_site: str, browser: Any
) -> None:
    site = failure_site
    context = await browser.new_context(viewport={"width": 1440, "height": 900})
    page = await context.new_page()
    problems = PageProblems(page)
    icon_asked = asyncio.Event()  # the browser's own request for the page's icon

    def browser_request(request: Any) -> None:
        if request.resource_type == "other":  # neither a document, a script nor a fetch
            icon_asked.set()

    page.on("requestfinished", browser_request)
    page.on("requestfailed", browser_request)
    await page.goto(site)
    await page.wait_for_selector("body[data-ready='true']")
    await asyncio.wait_for(icon_asked.wait(), 30)

    # The rules line names formats, not 14 extensions; the page declares its icon, so the
    # browser never asks for /favicon.ico; nothing failed on the way.
    assert await page.text_content("#rules") == (
        "JPEG, PNG, WebP, HEIC, AVIF · up to 30 MB · at least 200\u00d7200"
    )
    assert problems.items == []
    icon = await page.evaluate(
        """async () => {
            const r = await fetch(document.querySelector("link[rel='icon']").href);
            return [r.status, r.headers.get('content-type')];
        }"""
    )
    assert icon == [200, "image/svg+xml"]

    broken = jpeg(photo(900, 600))
    await page.set_input_files(
        "#picker",
        files=[
            {"name": "clear.png", "mimeType": "image/png", "buffer": half_transparent_png()},
            {"name": "broken.jpg", "mimeType": "image/jpeg", "buffer": broken[: len(broken) // 2]},
        ],
    )
    await page.wait_for_selector(".upload.failed[data-error='corrupt_image']", timeout=60_000)
    await page.wait_for_selector(".upload.done", timeout=60_000)

    async with httpx.AsyncClient(base_url=site, timeout=30) as client:
        # A failure that retrying cannot fix: its reason in words and its code, no Retry.
        corrupt = await item_of(client, "failed", "broken.jpg")
        assert corrupt["failedJob"]["kind"] == "media.process"
        assert corrupt["failedJob"]["error"]["code"] == "corrupt_image"
        assert corrupt["failedJob"]["error"]["retryable"] is False
        await page.wait_for_selector(f"#pending .card[data-id='{corrupt['id']}']")
        assert await tile(page, corrupt["id"]) == {
            "list": "pending",
            "reason": "This file is damaged and cannot be read.",
            "code": "corrupt_image",
            "badge": "Failed",
            "buttons": ["Delete"],
        }

        # The transparent PNG: once loaded, its placeholder is gone, so the transparent half
        # shows the card's own background and no red halo.
        clear = await item_of(client, "ready", "clear.png")
        thumb = f"#grid .card[data-id='{clear['id']}'] button.open"
        await page.wait_for_function(
            """(selector) => {
                const button = document.querySelector(selector);
                const img = button && button.querySelector('img');
                return img && img.complete && img.naturalWidth > 0
                    && button.classList.contains('loaded');
            }""",
            arg=thumb,
        )
        style = await page.eval_on_selector(
            thumb,
            "(b) => [getComputedStyle(b).backgroundImage, getComputedStyle(b).backgroundColor]",
        )
        assert style == ["none", "rgba(0, 0, 0, 0)"]
        pixels = Image.open(io.BytesIO(await page.locator(thumb).screenshot())).convert("RGB")
        width, height = pixels.size
        for fx in (0.05, 0.25, 0.40, 0.46):  # the transparent half, up to near its edge
            for fy in (0.1, 0.5, 0.9):
                pixel = pixels.getpixel((int(width * fx), int(height * fy)))
                assert pixel == CARD_BACKGROUND, (fx, fy, pixel)
        right = pixels.getpixel((int(width * 0.75), height // 2))
        assert isinstance(right, tuple)
        assert all(abs(a - b) <= 12 for a, b in zip(right, RED, strict=True)), right
        await shot(page, "transparent-1440")

        # Its detail view shows the transparent half over the light checkerboard, not black.
        await page.click(thumb)
        await page.wait_for_function(
            """() => { const img = document.getElementById('detail-img');
                       return img.complete && img.naturalWidth > 0
                           && img.currentSrc.includes('/detail'); }"""
        )
        detail = Image.open(io.BytesIO(await page.locator("#detail-img").screenshot()))
        detail = detail.convert("RGB")
        width, height = detail.size
        seen = set()
        for x in range(4, int(width * 0.46), 7):  # the transparent half, every 7th pixel
            for y in range(4, height - 4, 7):
                pixel = detail.getpixel((x, y))
                assert isinstance(pixel, tuple)
                assert all(CHECKER_DARK[0] - 2 <= c <= 255 for c in pixel), (x, y, pixel)
                assert max(pixel) - min(pixel) <= 3, (x, y, pixel)  # a neutral grey
                seen.add(pixel)
        assert CHECKER_LIGHT in seen and CHECKER_DARK in seen, seen
        right = detail.getpixel((int(width * 0.75), height // 2))
        assert isinstance(right, tuple)
        assert all(abs(a - b) <= 12 for a, b in zip(right, RED, strict=True)), right
        await shot(page, "detail-transparent-1440")
        await page.keyboard.press("Escape")

        # A failure that retrying can fix: review is on but has no provider.
        changed = await client.put(
            "/v1/admin/site-policies", json={"photoReviewEnabled": True}, headers=ADMIN
        )
        assert changed.status_code == 200, changed.text
        await page.set_input_files(
            "#picker",
            files=[
                {
                    "name": "review-me.jpg",
                    "mimeType": "image/jpeg",
                    "buffer": jpeg(quadrants(1000, 750)),
                }
            ],
        )
        # The item says why a moment before its job is marked failed (and Retry appears).
        await page.wait_for_selector(
            "#pending .card[data-status='in_review'] .retry", timeout=60_000
        )
        waiting = await item_of(client, "in_review", "review-me.jpg")
        review_job = waiting["failedJob"]
        assert review_job["kind"] == "media.review"
        assert review_job["error"] == {
            "code": "review_provider_disabled",
            "message": "photo review is on but no review provider is configured",
            "retryable": True,
        }
        expected_review = {
            "list": "pending",
            "reason": "The review could not run: no review service is set up.",
            "code": "review_provider_disabled",
            "badge": "In review",
            "buttons": ["Retry", "Delete"],
        }
        assert await tile(page, waiting["id"]) == expected_review
        # The upload's row follows the review: it no longer says "Waiting for review".
        row = f".upload[data-media-id='{waiting['id']}']"
        await page.wait_for_selector(f"{row}.failed[data-error='review_provider_disabled']")
        assert await page.text_content(f"{row} .state") == (
            "The review could not run: no review service is set up."
        )

        # A reload shows the same: the reasons come from the API, not from live events.
        await page.reload()
        await page.wait_for_selector("body[data-ready='true']")
        await page.wait_for_selector(f".card[data-id='{waiting['id']}']")
        assert (await tile(page, corrupt["id"]))["reason"] == (
            "This file is damaged and cannot be read."
        )
        assert await tile(page, waiting["id"]) == expected_review
        await shot(page, "failed-1440")

        # On a phone the badges are whole and the page does not scroll sideways.
        phone = await browser.new_context(viewport={"width": 375, "height": 667})
        small = await phone.new_page()
        await small.goto(site)
        await small.wait_for_selector("body[data-ready='true']")
        await small.wait_for_selector(f".card[data-id='{waiting['id']}'] .badge")
        badges = await small.eval_on_selector_all(
            "#pending .badge",
            """(badges) => badges.map((b) => {
                const box = b.getBoundingClientRect();
                const card = b.closest('.card').getBoundingClientRect();
                return {text: b.textContent, scroll: b.scrollWidth, client: b.clientWidth,
                        inside: box.left >= card.left && box.right <= card.right};
            })""",
        )
        assert sorted(b["text"] for b in badges) == ["Failed", "In review"]
        for badge in badges:
            assert badge["scroll"] <= badge["client"] and badge["inside"], badge
        assert await small.evaluate("document.documentElement.scrollWidth") <= 375
        await shot(small, "failed-375")
        await phone.close()

        # Retry once a provider is no longer needed: the new review job runs and the photo
        # moves to the gallery.
        changed = await client.put(
            "/v1/admin/site-policies", json={"photoReviewEnabled": False}, headers=ADMIN
        )
        assert changed.status_code == 200, changed.text
        async with page.expect_response(lambda r: r.url.endswith("/retry")) as answer:
            await page.click(f".card[data-id='{waiting['id']}'] .retry")
        retried = await (await answer.value).json()
        assert (await answer.value).status == 202
        assert retried["retryOf"] == review_job["id"]
        await page.wait_for_selector(f"#grid .card[data-id='{waiting['id']}'] img", timeout=60_000)
        assert await page.query_selector(f"#pending .card[data-id='{waiting['id']}']") is None
        job = (await client.get(f"/jobs/{retried['jobId']}", headers=DEV)).json()
        assert (job["kind"], job["state"]) == ("media.review", "succeeded")
        assert job["result"]["status"] == "ready"
        item = (await client.get(f"/media/{waiting['id']}", headers=DEV)).json()
        assert item["status"] == "ready" and item["failedJob"] is None

        # Delete still works on a failed tile.
        await page.click(f".card[data-id='{corrupt['id']}'] .delete")
        await page.wait_for_selector(f".card[data-id='{corrupt['id']}']", state="detached")
        assert await page.text_content("#toast-text") == "Deleted broken.jpg."
        listed = (await client.get("/media", params={"status": "failed"}, headers=DEV)).json()
        assert listed["items"] == []
    # No HTTP error or console error all along (the reload aborts the old page's stream).
    assert [p for p in problems.items if "net::ERR_ABORTED" not in p] == []
    await context.close()


# -- many photos at once, a server that turns a complete away, a row that follows its item ---


@pytest.fixture(scope="module")
def batch_site(services: Any, migrated_template: str) -> Iterator[str]:
    with dev_site(services, migrated_template) as base:
        yield base


async def set_policy(site: str, **changes: Any) -> None:
    async with httpx.AsyncClient(base_url=site, timeout=30) as client:
        changed = await client.put("/v1/admin/site-policies", json=changes, headers=ADMIN)
        assert changed.status_code == 200, changed.text


RECORD_ROWS = """() => {
    // Every state text and class an upload row ever shows, not only its last.
    window.rowHistory = [];
    const note = (row) => window.rowHistory.push({
        name: row.querySelector('.name').textContent,
        state: row.querySelector('.state').textContent,
        failed: row.classList.contains('failed'),
    });
    new MutationObserver((changes) => {
        for (const change of changes) {
            const row = (change.target.closest ? change.target : change.target.parentElement)
                ?.closest('.upload');
            if (row) note(row);
        }
    }).observe(document.getElementById('uploads'),
               {subtree: true, childList: true, characterData: true, attributes: true});
}"""


async def test_a_batch_larger_than_max_batch_size_queues_and_every_photo_ends_ready(
    batch_site: str, browser: Any
) -> None:
    page = await browser.new_page(viewport={"width": 1440, "height": 900})
    problems = PageProblems(page)
    await page.goto(batch_site)
    await page.wait_for_selector("body[data-ready='true']")
    await page.evaluate(RECORD_ROWS)
    # Lowered after the page loaded: the client reads the limit afresh when a batch starts.
    await set_policy(batch_site, maxBatchSize=2)
    files = [
        {
            "name": f"batch-{n}.jpg",
            "mimeType": "image/jpeg",
            "buffer": jpeg(quadrants(900 + 40 * n, 700)),
        }
        for n in range(5)
    ]
    await page.set_input_files("#picker", files=files)
    await page.wait_for_function(
        """() => [...document.querySelectorAll('.upload.done .state')]
                .filter((s) => s.textContent === 'Ready').length === 5""",
        timeout=120_000,
    )
    await page.wait_for_function("document.querySelectorAll('#grid .card').length === 5")
    history = await page.evaluate("window.rowHistory")
    # Three of the five waited their turn, shown as queued; no row ever showed a failure,
    # and the server never refused a complete (no 429, no console error).
    queued = {h["name"] for h in history if h["state"] == QUEUED_TEXT}
    assert len(queued) >= 3, history
    assert [h for h in history if h["failed"]] == []
    assert problems.items == []
    await page.close()


QUEUED_TEXT = "Queued: waiting for earlier uploads to finish"
TOO_MANY = {"error": {"code": "too_many_uploads", "message": "at most 2 uploads at once"}}


async def test_a_refused_complete_is_sent_again_and_a_given_up_one_retries_only_the_complete(
    batch_site: str, browser: Any
) -> None:
    page = await browser.new_page(viewport={"width": 1440, "height": 900})
    await page.goto(batch_site)
    await page.wait_for_selector("body[data-ready='true']")
    await page.evaluate(RECORD_ROWS)
    calls: list[str] = []
    page.on(
        "request",
        lambda r: calls.append(r.url.rsplit("/", 1)[-1]) if "/media/upload/" in r.url else None,
    )
    # The server turns the complete away twice: once without Retry-After (the client backs
    # off on its own), once with it; the third goes through.
    answers = [
        {"status": 429, "json": TOO_MANY},
        {"status": 429, "json": TOO_MANY, "headers": {"Retry-After": "1"}},
    ]

    async def busy(route: Any) -> None:
        if answers:
            await route.fulfill(**answers.pop(0))
        else:
            await route.continue_()

    await page.route("**/media/upload/complete", busy)
    await page.set_input_files(
        "#picker",
        files=[{"name": "later.jpg", "mimeType": "image/jpeg", "buffer": jpeg(photo(900, 600))}],
    )
    row = ".upload:has(.name:text-is('later.jpg'))"
    await page.wait_for_selector(f"{row}.done", timeout=60_000)
    assert await page.text_content(f"{row} .state") == "Ready"
    assert calls == ["init", "complete", "complete", "complete"]
    history = await page.evaluate("window.rowHistory")
    assert QUEUED_TEXT in [h["state"] for h in history if h["name"] == "later.jpg"]
    assert [h for h in history if h["failed"]] == []
    await page.unroute("**/media/upload/complete")

    # A Retry-After longer than the client's budget (five minutes): it gives up at once and
    # the row offers Retry, which sends only the complete (the bytes are stored).
    calls.clear()

    async def closed(route: Any) -> None:
        await route.fulfill(status=429, json=TOO_MANY, headers={"Retry-After": "3600"})

    await page.route("**/media/upload/complete", closed)
    await page.set_input_files(
        "#picker",
        files=[{"name": "stuck.jpg", "mimeType": "image/jpeg", "buffer": jpeg(photo(1000, 700))}],
    )
    row = ".upload:has(.name:text-is('stuck.jpg'))"
    await page.wait_for_selector(f"{row}.failed[data-error='too_many_uploads']", timeout=60_000)
    assert await page.text_content(f"{row} .state") == (
        "Too many uploads at once; try again in a moment."
    )
    assert await page.is_visible(f"{row} .retry")
    assert calls == ["init", "complete"]
    await shot(page, "upload-retry-1440")
    await page.unroute("**/media/upload/complete")
    await page.click(f"{row} .retry")
    await page.wait_for_selector(f"{row}.done", timeout=60_000)
    assert await page.text_content(f"{row} .state") == "Ready"
    assert await page.is_hidden(f"{row} .retry")
    assert calls == ["init", "complete", "complete"]  # no second init, so no second upload
    async with httpx.AsyncClient(base_url=batch_site, timeout=30) as client:
        item = await item_of(client, "ready", "stuck.jpg")
    await page.wait_for_selector(f"#grid .card[data-id='{item['id']}'] img")
    await page.close()


async def test_an_upload_row_follows_its_review_to_failure_and_a_retry_to_ready(
    batch_site: str, browser: Any
) -> None:
    page = await browser.new_page(viewport={"width": 1440, "height": 900})
    await page.goto(batch_site)
    await page.wait_for_selector("body[data-ready='true']")
    await set_policy(batch_site, photoReviewEnabled=True)  # on, with no provider: it fails
    try:
        await page.set_input_files(
            "#picker",
            files=[
                {"name": "judge.jpg", "mimeType": "image/jpeg", "buffer": jpeg(photo(960, 720))}
            ],
        )
        row = ".upload:has(.name:text-is('judge.jpg'))"
        await page.wait_for_selector(
            f"{row}.failed[data-error='review_provider_disabled']", timeout=60_000
        )
        assert await page.text_content(f"{row} .state") == (
            "The review could not run: no review service is set up."
        )
        media_id = await page.get_attribute(row, "data-media-id")
        assert (await tile(page, str(media_id)))["reason"] == await page.text_content(
            f"{row} .state"
        )
        await shot(page, "review-failed-row-1440")
        await set_policy(batch_site, photoReviewEnabled=False)
        await page.click(f".card[data-id='{media_id}'] .retry")
        await page.wait_for_selector(f"#grid .card[data-id='{media_id}']", timeout=60_000)
        await page.wait_for_selector(f"{row}.done")
        assert await page.text_content(f"{row} .state") == "Ready"
        assert await page.get_attribute(row, "data-error") is None
    finally:
        await set_policy(batch_site, photoReviewEnabled=False)
    await page.close()


async def test_a_job_whose_end_was_lost_in_a_resync_is_read_over_rest(
    batch_site: str, browser: Any
) -> None:
    """Waiting uploads hold processing slots until their job ends: a terminal event lost in
    a `resync` gap must not leave a wait (and so the batch) stuck."""
    page = await browser.new_page()
    await page.goto(batch_site)
    await page.wait_for_selector("body[data-ready='true']")
    await page.set_input_files(
        "#picker",
        files=[{"name": "gap.jpg", "mimeType": "image/jpeg", "buffer": jpeg(photo(800, 600))}],
    )
    await page.wait_for_selector(".upload:has(.name:text-is('gap.jpg')).done", timeout=60_000)
    async with httpx.AsyncClient(base_url=batch_site, timeout=30) as client:
        finished_job = (await item_of(client, "ready", "gap.jpg"))["jobId"]
    outcome = await page.evaluate(
        """async (jobId) => {
            // A stream that delivers only what this test sends: the job's end never comes.
            class Quiet extends EventTarget {
                constructor() { super(); Quiet.last = this; this.readyState = 1; }
                close() {}
            }
            window.EventSource = Quiet;
            const { createMediaClient } = await import('/static/mediajobs-client.js');
            const media = createMediaClient({
                getToken: () => localStorage.getItem('mediajobs.token'),
            });
            let settled = null;
            const waiting = media.follow(jobId).then((e) => (settled = e));
            await new Promise((r) => setTimeout(r, 300));
            const before = settled;
            Quiet.last.dispatchEvent(new MessageEvent('resync', {
                data: JSON.stringify({reason: 'history_expired', lastEventId: '1'}),
            }));
            // Bounded, so a wait that never ends fails the test instead of hanging it.
            const last = await Promise.race([
                waiting,
                new Promise((r) => setTimeout(() => r({type: 'still waiting', data: {}}), 20000)),
            ]);
            media.close();
            return { before, type: last.type, jobId: last.data.jobId ?? null,
                     status: last.data.result && last.data.result.status };
        }""",
        finished_job,
    )
    assert outcome == {
        "before": None,
        "type": "job_complete",
        "jobId": finished_job,
        "status": "ready",
    }
    await page.close()
