"""The live limits: public media rules for clients, and the admin view of the site policy."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mediajobs.config import Environment, Settings
from mediajobs.db.policies import PolicyInvalid, SitePolicy
from mediajobs.errors import AuthError
from mediajobs.imaging.formats import ACCEPTED_TYPES, EXTENSIONS
from mediajobs.service.auth import Principal
from mediajobs.service.body import read_body
from mediajobs.service.errors import ApiError
from mediajobs.service.models import (
    DevToken,
    DevTokenRequest,
    MediaRules,
    SitePolicyUpdate,
    SitePolicyView,
    Variant,
    api_names,
    policy_fields,
    to_json,
)
from mediajobs.service.state import Services, caller, services
from mediajobs.types import JSON

DEV_TOKEN_TTL = 12 * 3600  # seconds a dev token is valid


def media_rules_of(policy: SitePolicy, settings: Settings) -> MediaRules:
    """The public rules of a policy, and the collection rules of ``settings``."""
    return MediaRules(
        max_batch_size=policy.max_batch_size,
        max_source_bytes=policy.max_source_bytes,
        min_width=policy.min_width,
        min_height=policy.min_height,
        min_aspect_ratio=policy.min_aspect_ratio,
        max_aspect_ratio=policy.max_aspect_ratio,
        max_megapixels=policy.max_megapixels,
        undo_window_seconds=policy.undo_window_seconds,
        accepted_types=list(ACCEPTED_TYPES),
        accepted_extensions=sorted(e for e, t in EXTENSIONS.items() if t in ACCEPTED_TYPES),
        variants=[Variant(name=v.name, size=v.size) for v in policy.variants],
        review_enabled=policy.photo_review_enabled,
        collection_purposes=list(settings.collection_purposes),
        collection_max_items=settings.collection_max_items,
    )


async def media_rules(request: Request) -> Response:
    """``GET /v1/meta/media-rules`` (public): what clients check before uploading."""
    svc = services(request)
    policy = await svc.policies.load()
    return JSONResponse(
        to_json(media_rules_of(policy, svc.settings)),
        headers={"cache-control": "public, max-age=30"},
    )


def _admin(request: Request) -> tuple[Services, Principal]:
    svc, principal = caller(request)
    if not principal.is_admin:
        raise ApiError(403, "forbidden", "the site policy needs the admin role")
    return svc, principal


def policy_json(policy: SitePolicy) -> dict[str, JSON]:
    """The editable fields of ``policy`` by their API names (``mediajobs policy show``)."""
    return to_json(SitePolicyUpdate.model_construct(**policy_fields(policy)))


def _view_json(policy: SitePolicy) -> dict[str, JSON]:
    fields = policy_fields(policy)
    view = SitePolicyView.model_construct(
        **fields, updated_at=policy.updated_at, updated_by=policy.updated_by
    )
    return to_json(view)


async def get_site_policy(request: Request) -> Response:
    svc, _ = _admin(request)
    return JSONResponse(_view_json(await svc.policies.load()))


async def put_site_policy(request: Request) -> Response:
    """Change any subset of the fields; validated as a whole, effective at once."""
    svc, principal = _admin(request)
    body = await read_body(request, SitePolicyUpdate)
    try:
        policy = await svc.policies.update(body.changes(), by=principal.user_id)
    except PolicyInvalid as exc:
        field = api_names(SitePolicyUpdate).get(exc.field, exc.field)
        raise ApiError(422, "invalid_policy", f"{field}: {str(exc).partition(': ')[2]}") from None
    return JSONResponse(_view_json(policy))


async def dev_token(request: Request) -> Response:
    """``POST /dev/token`` (development only): a token for a dev user, so the page signs in
    without a login."""
    svc = services(request)
    if svc.settings.env is Environment.PRODUCTION:
        raise AuthError("not_found", "no such route", status=404)
    body = await read_body(request, DevTokenRequest, allow_empty=True)
    user = body.user or "dev"
    token = svc.auth.issue_token(user, ttl=DEV_TOKEN_TTL)
    return JSONResponse(to_json(DevToken(token=token, user=user, expires_in=DEV_TOKEN_TTL)))
