"""The worker's handlers are wired from the resources its composition root opens, and the
webhook reviewer speaks its protocol (signed body, verdict, retry or failure) over any
transport: no database, no network."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from datetime import UTC, datetime

import httpx
import pytest

from mediajobs.config import Settings
from mediajobs.db.media import MediaRecord, MediaStatus
from mediajobs.errors import JobFailed, Retry
from mediajobs.handlers import WorkerResources, build_registry, media_handlers
from mediajobs.handlers.imaging_pool import ImagingPool, PoolOptions
from mediajobs.handlers.review import Verdict, WebhookReviewer
from mediajobs.realtime import EventRecorder
from mediajobs.storage import MemoryStore, StoreRegistry

SECRET = "s" * 32
MEDIA = uuid.UUID("01a20dd0-0000-7000-8000-0000000000aa")


def resources(settings: Settings, http: httpx.AsyncClient) -> WorkerResources:
    # The repositories only keep the pool; nothing here reaches a database.
    return WorkerResources(
        settings=settings,
        pool=object(),  # type: ignore[arg-type]
        stores=StoreRegistry(MemoryStore("http://testserver/storage")),
        imaging=ImagingPool(PoolOptions(processes=1)),  # starts no process until used
        http=http,
        events=EventRecorder(None),
    )


def record() -> MediaRecord:
    now = datetime(2026, 12, 1, tzinfo=UTC)
    values: dict[str, object] = dict.fromkeys(MediaRecord.__dataclass_fields__)
    values.update(
        id=MEDIA,
        owner_id="alice",
        kind="image",
        purpose="gallery",
        status=MediaStatus.IN_REVIEW.value,
        source_locator="memory://memory/media/alice/uploads/u/a.jpg",
        width=640,
        height=480,
        detected_type="image/jpeg",
        variants={},
        sort_order=1,
        alt_text="a cat",
        created_at=now,
        updated_at=now,
    )
    return MediaRecord.from_row(values)


async def test_the_default_registry_runs_ping_the_media_ingest_and_understanding_kinds() -> None:
    async with httpx.AsyncClient() as http:
        registry = build_registry(resources(Settings(), http))
    assert registry.kinds == [
        "ingest.batch",
        "ingest.scan",
        "media.delete",
        "media.embed",
        "media.process",
        "media.purge",
        "media.review",
        "system.ping",
    ]


async def test_the_webhook_reviewer_is_configured_only_with_its_url() -> None:
    async with httpx.AsyncClient() as http:
        without = media_handlers(resources(Settings(), http))
        settings = Settings(review_webhook_url="http://review.test/hook")
        with_url = media_handlers(resources(settings, http))
    assert without.review.reviewers == {}
    assert list(with_url.review.reviewers) == ["webhook"]
    reviewer = with_url.review.reviewers["webhook"]
    assert isinstance(reviewer, WebhookReviewer)
    assert reviewer.url == "http://review.test/hook"
    assert reviewer.http is http


async def test_the_webhook_gets_the_signed_item_and_its_verdict_is_read() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"allowed": False, "reason": "not a cat"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http:
        reviewer = WebhookReviewer("http://review.test/hook", http=http, secret=SECRET)
        verdict = await reviewer.review(record(), "http://cdn.test/preview.webp")
    assert verdict == Verdict(allowed=False, reason="not a cat")
    (request,) = seen
    body = request.content
    assert json.loads(body) == {
        "mediaId": str(MEDIA),
        "ownerId": "alice",
        "purpose": "gallery",
        "previewURL": "http://cdn.test/preview.webp",
        "width": 640,
        "height": 480,
        "detectedType": "image/jpeg",
        "altText": "a cat",
    }
    digest = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert request.headers["x-mediajobs-signature"] == f"sha256={digest}"


@pytest.mark.parametrize(
    ("status", "payload", "error", "code"),
    [
        (503, {"error": "busy"}, Retry, "review_unavailable"),
        (429, {}, Retry, "review_unavailable"),
        (200, {"reason": "no verdict"}, Retry, "review_invalid_response"),
        (200, {"allowed": "yes"}, Retry, "review_invalid_response"),
        (403, {}, JobFailed, "review_webhook_refused"),
    ],
)
async def test_a_webhook_that_cannot_answer_retries_and_one_that_refuses_fails(
    status: int, payload: dict[str, object], error: type[Exception], code: str
) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json=payload)

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http:
        reviewer = WebhookReviewer("http://review.test/hook", http=http)
        with pytest.raises(error) as raised:
            await reviewer.review(record(), "http://cdn.test/p.webp")
    assert getattr(raised.value, "code", None) == code
