"""The Collections panel of the media library page in a real browser: Debian's chromium driven
by Playwright against a real `mediajobs dev` process (real Postgres and Redis), as in
test_page.py. Screenshots go to test-artifacts/."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.acceptance import test_page
from tests.acceptance.test_page import PageProblems, shot
from tests.support.images import BLUE, GREEN, RED, jpeg, photo, quadrants, stripes
from tests.support.sse import bearer, dev_site

pytestmark = test_page.pytestmark  # chromium, its skips, the timeout
browser = test_page.browser  # the fixture: Debian's chromium through Playwright
DEV = bearer("dev")  # the page's user in development
ENTITY = "/entities/listing/8412/media"
PUBLIC = "/public/entities/listing/8412"
STALE = (
    "This collection was changed elsewhere (another tab or device, or a photo in it was "
    "deleted or replaced) since you opened it, so your changes were not saved. Reload it to "
    "see the current version; your edits here will be lost."
)


@pytest.fixture(scope="module")
def site(services: Any, migrated_template: str) -> Iterator[str]:
    with dev_site(services, migrated_template) as base:
        yield base


async def rows(page: Any) -> list[dict[str, Any]]:
    """The open collection as the panel shows it, in order."""
    shown: list[dict[str, Any]] = await page.eval_on_selector_all(
        "#collection-items li.entry",
        """(rows) => rows.map((row) => ({
            id: row.dataset.id,
            purpose: row.querySelector('select.purpose').value,
            profile: row.querySelector('input.profile').checked,
        }))""",
    )
    return shown


async def order(page: Any) -> list[str]:
    return [row["id"] for row in await rows(page)]


async def wait_order(page: Any, ids: list[str]) -> None:
    await page.wait_for_function(
        """(ids) => JSON.stringify([...document.querySelectorAll('#collection-items li.entry')]
                .map((row) => row.dataset.id)) === JSON.stringify(ids)""",
        arg=ids,
    )


def storage(url: str) -> bool:
    """The development store's objects (the variants' URLs)."""
    return "/storage/" in url


def row(media_id: str) -> str:
    return f"#collection-items li.entry[data-id='{media_id}']"


async def owner_view(client: httpx.AsyncClient) -> tuple[dict[str, Any], str]:
    answer = await client.get(ENTITY, headers=DEV)
    assert answer.status_code == 200, answer.text
    return answer.json(), answer.headers["etag"]


async def test_a_collection_is_built_reordered_saved_and_shown_publicly_and_a_stale_save_is_refused(
    site: str, browser: Any
) -> None:
    context = await browser.new_context(viewport={"width": 1440, "height": 900})
    page = await context.new_page()
    problems = PageProblems(page)
    await page.goto(site)
    await page.wait_for_selector("body[data-ready='true']")
    # Three photos that look different, so the screenshots show the order.
    pictures = {
        "sea.jpg": photo(900, 600),
        "hill.jpg": stripes((RED, GREEN, BLUE), 960, 600),
        "town.jpg": quadrants(1020, 600),
    }
    names = list(pictures)
    await page.set_input_files(
        "#picker",
        files=[
            {"name": name, "mimeType": "image/jpeg", "buffer": jpeg(picture)}
            for name, picture in pictures.items()
        ],
    )
    await page.wait_for_function(
        "document.querySelectorAll('.upload.done').length === 3", timeout=60_000
    )
    await page.wait_for_function("document.querySelectorAll('#grid .card').length === 3")
    async with httpx.AsyncClient(base_url=site, timeout=30) as client:
        listed = (await client.get("/media", headers=DEV)).json()["items"]
        ids = {item["filename"]: item["id"] for item in listed}
        sea, hill, town = (ids[name] for name in names)

        # No collection open: the library's Add buttons are hidden.
        assert await page.is_hidden(f".card[data-id='{sea}'] button.add")

        # Open listing/8412: nothing was ever attached, so it is a new, empty collection.
        await page.fill("#entity-type", "listing")
        await page.fill("#entity-id", "8412")
        await page.click("#collection-open button[type='submit']")
        await page.wait_for_selector("#collection:not([hidden])")
        assert await page.text_content("#collection-name") == "listing/8412"
        assert await page.text_content("#collection-version") == "new"
        assert "has no photos yet" in (await page.text_content("#collection-status") or "")

        # Add the three from the library, in this order (the last by keyboard: the focus
        # stays on its button, now "Added", instead of falling to the page).
        for media_id in (sea, hill):
            await page.click(f".card[data-id='{media_id}'] button.add")
        await page.focus(f".card[data-id='{town}'] button.add")
        await page.keyboard.press("Enter")
        assert await page.evaluate("document.activeElement.dataset.id") == town
        assert await order(page) == [sea, hill, town]
        added = f".card[data-id='{sea}'] button.add"
        assert await page.text_content(added) == "Added"
        assert await page.get_attribute(added, "aria-disabled") == "true"  # keeps the focus
        assert await page.get_attribute(added, "aria-label") == "sea.jpg is in listing/8412"
        assert [r["purpose"] for r in await rows(page)] == ["gallery"] * 3

        # Reorder by drag and drop: town onto the top half of sea goes first.
        await page.locator(f"{row(town)} .handle").drag_to(
            page.locator(row(sea)), target_position={"x": 40, "y": 4}
        )
        await wait_order(page, [town, sea, hill])
        # And by keyboard: hill's "Move up", pressed with Enter, keeps the focus on it.
        await page.focus(f"{row(hill)} button.up")
        assert await page.get_attribute(f"{row(hill)} button.up", "aria-label") == (
            "Move hill.jpg up"
        )
        await page.keyboard.press("Enter")
        await wait_order(page, [town, hill, sea])
        assert await page.evaluate("document.activeElement.getAttribute('aria-label')") == (
            "Move hill.jpg up"
        )
        assert await page.text_content("#collection-status") == (
            "Moved hill.jpg to position 2 of 3. Not saved yet."
        )
        assert await page.is_disabled(f"{row(town)} button.up")  # first: nowhere to go up
        assert await page.is_disabled(f"{row(sea)} button.down")

        # Purposes from the media rules; one profile at most: a new one demotes the old.
        purposes = (await client.get("/v1/meta/media-rules")).json()["collectionPurposes"]
        options = await page.eval_on_selector(
            f"{row(sea)} select.purpose", "(s) => [...s.options].map((o) => o.value)"
        )
        assert options == purposes and "profile" in purposes and "cover" in purposes
        await page.select_option(f"{row(sea)} select.purpose", "profile")
        await page.check(f"{row(hill)} input.profile")
        await page.select_option(f"{row(town)} select.purpose", "cover")
        assert await rows(page) == [
            {"id": town, "purpose": "cover", "profile": False},
            {"id": hill, "purpose": "profile", "profile": True},
            {"id": sea, "purpose": "gallery", "profile": False},
        ]
        assert await page.get_attribute("#collection", "data-dirty") == "true"

        # Save: the server has the order and the purposes, and the panel its version.
        async with page.expect_response(lambda r: r.url.endswith(ENTITY)) as saved:
            await page.click("#collection-save")
        put = await saved.value
        assert (put.request.method, put.status) == ("PUT", 200)
        assert put.request.headers["if-match"] == '"c0"'  # new: saved only if still new
        view, etag = await owner_view(client)
        assert [(i["mediaId"], i["purpose"]) for i in view["items"]] == [
            (town, "cover"),
            (hill, "profile"),
            (sea, "gallery"),
        ]
        await page.wait_for_selector("#collection[data-dirty='false']")
        assert await page.text_content("#collection-version") == f"version {view['version']}"
        assert etag == f'"c{view["version"]}"'

        # The public view (no token), images held back a moment to see their placeholders.
        public = (await client.get(PUBLIC)).json()
        assert [i["id"] for i in public["items"]] == [town, hill, sea]
        release = asyncio.Event()
        held: list[str] = []

        async def hold(route: Any) -> None:
            held.append(route.request.url)
            await release.wait()
            await route.continue_()

        await page.route(storage, hold)
        async with page.expect_request(lambda r: PUBLIC in r.url) as asked:
            await page.click("#collection-public")
        assert (await asked.value).headers.get("authorization") is None
        assert await page.get_attribute("#collection-public", "aria-expanded") == "true"
        await page.wait_for_selector("#public-body .public-items li")
        await page.locator("#public-view").scroll_into_view_if_needed()
        shown = await page.eval_on_selector_all(
            "#public-body .public-items li",
            """(items) => items.map((li) => {
                const img = li.querySelector('img');
                return {id: li.dataset.id, purpose: li.dataset.purpose, alt: img.alt,
                        srcset: img.getAttribute('srcset'), sizes: img.getAttribute('sizes'),
                        src: img.getAttribute('src'), loading: img.loading,
                        placeholder: img.style.backgroundImage};
            })""",
        )
        assert [s["id"] for s in shown] == [town, hill, sea]
        assert [s["purpose"] for s in shown] == ["cover", "profile", "gallery"]
        for n, (item, expected) in enumerate(zip(shown, public["items"], strict=True)):
            assert item["srcset"] == expected["srcset"] and item["src"] == expected["src"]
            assert item["sizes"] and item["loading"] == "lazy"
            assert item["alt"] == (expected["altText"] or f"Photo {n + 1} of 3")
            assert expected["blurDataURL"].startswith("data:image/")
            assert item["placeholder"] == f'url("{expected["blurDataURL"]}")'
        assert await page.get_attribute("#public-body .public-profile", "data-id") == hill
        assert await page.get_attribute("#public-body .public-cover", "data-id") == town
        assert held  # the images waited for us
        release.set()
        await page.locator("#public-body .public-items li:last-child").scroll_into_view_if_needed()
        await page.wait_for_function(
            """() => {
                const imgs = [...document.querySelectorAll('#public-body img')];
                return imgs.length === 5 && imgs.every((img) => img.complete
                    && img.naturalWidth > 0 && img.style.backgroundImage === '');
            }""",
            timeout=30_000,
        )
        await page.unroute(storage)
        await shot(page, "collections-1440")

        # Changed through the API while the page is clean: its event refreshes the panel.
        answer = await client.put(
            ENTITY,
            headers={**DEV, "If-Match": etag},
            json={
                "items": [
                    {"mediaId": hill, "purpose": "profile"},
                    {"mediaId": town, "purpose": "cover"},
                    {"mediaId": sea, "purpose": "gallery"},
                ]
            },
        )
        assert answer.status_code == 200, answer.text
        await wait_order(page, [hill, town, sea])
        view, etag = await owner_view(client)
        await page.wait_for_function(
            "(text) => document.getElementById('collection-version').textContent === text",
            arg=f"version {view['version']}",
        )
        await page.wait_for_function(  # the open public view follows
            """(ids) => JSON.stringify(
                [...document.querySelectorAll('#public-body .public-items li')]
                .map((li) => li.dataset.id)) === JSON.stringify(ids)""",
            arg=[hill, town, sea],
        )

        # An edit in the page, then a change through the API: the page's ETag is stale.
        await page.click(f"{row(sea)} button.remove")
        assert await order(page) == [hill, town]
        answer = await client.put(
            ENTITY,
            headers={**DEV, "If-Match": etag},
            json={
                "items": [
                    {"mediaId": sea, "purpose": "gallery"},
                    {"mediaId": hill, "purpose": "profile"},
                    {"mediaId": town, "purpose": "cover"},
                ]
            },
        )
        assert answer.status_code == 200, answer.text
        # The event says so at once, and the edits stay.
        await page.wait_for_selector("#collection-notice:not([hidden])")
        assert "changed elsewhere" in (await page.text_content("#collection-notice-text") or "")
        assert await order(page) == [hill, town]
        async with page.expect_response(lambda r: r.url.endswith(ENTITY)) as refused:
            await page.click("#collection-save")
        stale = await refused.value
        assert (stale.request.method, stale.status) == ("PUT", 412)
        assert stale.request.headers["if-match"] == etag
        assert (await stale.json())["error"]["code"] == "stale_collection"
        await page.wait_for_function(
            "(text) => document.getElementById('collection-notice-text').textContent === text",
            arg=STALE,
        )
        assert await page.is_visible("#collection-reload")
        assert await page.text_content("#collection-status") == (
            "Not saved: the collection changed elsewhere."
        )
        await shot(page, "collections-stale-1440")
        view, _ = await owner_view(client)
        assert [i["mediaId"] for i in view["items"]] == [sea, hill, town]  # nothing overwritten

        # Reload shows the current version, without the edits.
        await page.click("#collection-reload")
        await wait_order(page, [sea, hill, town])
        await page.wait_for_selector("#collection-notice", state="hidden")
        assert await page.get_attribute("#collection", "data-dirty") == "false"
        assert await page.text_content("#collection-version") == f"version {view['version']}"

    # Nothing failed but the answers this test asked for: the 404 of the new collection
    # and the refused save (and the console line Chromium writes for each).
    expected = ("404 " + site + ENTITY, "412 " + site + ENTITY, "console: Failed to load")
    assert [p for p in problems.items if not p.startswith(expected)] == []
    await context.close()

    # On a phone the panel and the public view fit: no sideways scrolling.
    phone = await browser.new_context(viewport={"width": 375, "height": 812})
    small = await phone.new_page()
    await small.goto(site)
    await small.wait_for_selector("body[data-ready='true']")
    await small.fill("#entity-type", "listing")
    await small.fill("#entity-id", "8412")
    await small.click("#collection-open button[type='submit']")
    await small.wait_for_selector("#collection-items li.entry")
    await small.click("#collection-public")
    await small.wait_for_selector("#public-body .public-items li")
    assert await small.evaluate("document.documentElement.scrollWidth") <= 375
    await shot(small, "collections-375")
    await phone.close()
