"""``media.review``: the review gate, and the reviewers it asks.

The site policy names the provider (``photoReviewProvider``). A provider with a configured
``Reviewer`` is asked; ``webhook`` without MEDIAJOBS_REVIEW_WEBHOOK_URL fails retryable-on-
request with ``review_webhook_not_configured``, any other (``disabled``) with
``review_provider_disabled``. Allowed -> ready (and a replacement cuts over); refused ->
rejected, and a replaced item stays live.

``WebhookReviewer`` POSTs the preview and expects ``{allowed, reason}`` (timeouts, 429 and 5xx
retry). Another provider (an AI model) is another ``Reviewer``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import httpx

from mediajobs.db.media import MediaRecord, MediaRepository, MediaStatus
from mediajobs.db.policies import SitePolicies
from mediajobs.errors import JobFailed, Retry
from mediajobs.handlers.jobs import cut_over, media_id_of, now
from mediajobs.handlers.understand import enqueue_understanding
from mediajobs.queue.models import Job
from mediajobs.queue.registry import JobContext
from mediajobs.realtime import EventRecorder
from mediajobs.storage import StoreRegistry
from mediajobs.storage.base import Locator
from mediajobs.types import JSON


@dataclass(frozen=True)
class Verdict:
    """A reviewer's answer: whether the item may be shown, and why (or None)."""

    allowed: bool
    reason: str | None


class Reviewer(Protocol):
    """Decides whether an item in review may be shown. Raises ``Retry`` for a passing
    failure and ``JobFailed`` for one that needs an operator."""

    async def review(self, record: MediaRecord, preview_url: str) -> Verdict: ...


class WebhookReviewer:
    """The ``webhook`` provider: POSTs the item (with its preview's URL) to ``url``, signed
    with HMAC-SHA256 of the body in ``x-mediajobs-signature`` when ``secret`` is set."""

    def __init__(self, url: str, *, http: httpx.AsyncClient, secret: str | None = None) -> None:
        self.url = url
        self.http = http
        self.secret = secret

    async def review(self, record: MediaRecord, preview_url: str) -> Verdict:
        body = json.dumps(
            {
                "mediaId": str(record.id),
                "ownerId": record.owner_id,
                "purpose": record.purpose,
                "previewURL": preview_url,
                "width": record.width,
                "height": record.height,
                "detectedType": record.detected_type,
                "altText": record.alt_text,
            }
        ).encode()
        headers = {"content-type": "application/json"}
        if self.secret:
            digest = hmac.new(self.secret.encode(), body, hashlib.sha256).hexdigest()
            headers["x-mediajobs-signature"] = f"sha256={digest}"
        try:
            response = await self.http.post(self.url, content=body, headers=headers)
        except httpx.TimeoutException:
            raise Retry("the review webhook timed out", code="review_timeout") from None
        except httpx.HTTPError as exc:
            raise Retry(f"the review webhook failed: {exc}", code="review_unavailable") from None
        if response.status_code >= 500 or response.status_code == 429:
            raise Retry(
                f"the review webhook answered {response.status_code}", code="review_unavailable"
            )
        if response.status_code >= 400:
            raise JobFailed(
                f"the review webhook refused the request ({response.status_code})",
                code="review_webhook_refused",
                retryable=True,
            )
        try:
            answer = response.json()
            allowed = answer["allowed"]
            reason = answer.get("reason")
        except (ValueError, KeyError, TypeError, AttributeError):
            raise Retry(
                "the review webhook answered without {allowed, reason}",
                code="review_invalid_response",
            ) from None
        if not isinstance(allowed, bool) or not (reason is None or isinstance(reason, str)):
            raise Retry(
                "the review webhook answer has the wrong types", code="review_invalid_response"
            )
        return Verdict(allowed, reason)


class ReviewHandler:
    """``media.review``: ask the policy's provider and move the item on. ``reviewers`` maps a
    provider name to the reviewer configured for it."""

    def __init__(
        self,
        *,
        media: MediaRepository,
        policies: SitePolicies,
        stores: StoreRegistry,
        reviewers: Mapping[str, Reviewer],
        events: EventRecorder,
    ) -> None:
        self.media = media
        self.policies = policies
        self.stores = stores
        self.reviewers = dict(reviewers)
        self.events = events

    async def __call__(self, ctx: JobContext, job: Job) -> JSON:
        media_id = media_id_of(ctx, job)
        media = self.media
        record = await media.get(media_id, job.owner_id)
        if record is None:
            raise JobFailed(f"media {media_id} not found", code="media_not_found")
        ctx.describe(fileName=record.original_filename)
        if record.status is not MediaStatus.IN_REVIEW:
            return {"mediaId": str(media_id), "status": record.status.value, "skipped": True}
        policy = await self.policies.load()
        provider = policy.photo_review_provider
        reason: str | None
        try:
            if not policy.photo_review_enabled:
                allowed, reason, provider = True, "review turned off", "none"
            elif (reviewer := self.reviewers.get(provider)) is not None:
                verdict = await reviewer.review(record, await self._preview_url(record))
                allowed, reason = verdict.allowed, verdict.reason
            elif provider == "webhook":
                raise JobFailed(
                    "the webhook review provider needs MEDIAJOBS_REVIEW_WEBHOOK_URL",
                    code="review_webhook_not_configured",
                    retryable=True,
                )
            else:
                raise JobFailed(
                    "photo review is on but no review provider is configured",
                    code="review_provider_disabled",
                    retryable=True,
                )
        except (JobFailed, Retry) as exc:
            if isinstance(exc, JobFailed) or job.attempt >= job.max_attempts:
                # The review stopped for good: the item says why, and which job to retry.
                error = {"status": "error", "provider": provider, "code": exc.code}
                await media.set_review(media_id, {**error, "jobId": str(job.id), "at": now()})
            raise
        review: dict[str, JSON] = {
            "status": "allowed" if allowed else "rejected",
            "provider": provider,
            "reason": reason,
            "at": now(),
        }
        async with media.transaction() as conn:
            status = MediaStatus.READY if allowed else MediaStatus.REJECTED
            done = await media.set_review(media_id, review, status=status, conn=conn)
            if done is None:
                return {"mediaId": str(media_id), "skipped": True}
            old = None
            if allowed:
                old = await cut_over(ctx, media, done, policy.undo_window_seconds, conn)
                await enqueue_understanding(ctx.queue, conn, job.owner_id, [media_id])
            change = "review" if old is None else "replaced"
            recorded = await self.events.collections_changed(conn, media_id, change, job.id)
        await self.events.committed(recorded)
        return {
            "mediaId": str(media_id),
            "status": done.status.value,
            "allowed": allowed,
            "reason": reason,
        }

    async def _preview_url(self, record: MediaRecord) -> str:
        """The URL of the item's preview variant (else its largest)."""
        preview = record.variants.get("preview") or max(
            record.variants.values(), key=lambda v: int(v["width"]) * int(v["height"])
        )
        return await self.stores.url(Locator.parse(preview["locator"]))
