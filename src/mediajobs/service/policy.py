"""The live limits: public media rules for clients, and the admin view of the site policy."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mediajobs.config import Environment
from mediajobs.db.policies import FIELDS, PolicyInvalid, SitePolicies, SitePolicy
from mediajobs.errors import AuthError
from mediajobs.imaging.formats import ACCEPTED_TYPES, EXTENSIONS
from mediajobs.service.auth import Principal
from mediajobs.service.body import Field, read_json, text
from mediajobs.service.errors import ApiError
from mediajobs.service.state import Services, caller, services

# The body of PUT /v1/admin/site-policies: API name -> site_policies column, and the column
# back to its API name for error messages.
_BODY = {api: Field((kind,)) for api, kind in FIELDS.values()}
_COLUMN = {api: column for column, (api, _) in FIELDS.items()}
_CAMEL = {column: api for column, (api, _) in FIELDS.items()}


def rules_json(policy: SitePolicy) -> dict[str, Any]:
    return {
        "maxBatchSize": policy.max_batch_size,
        "maxSourceBytes": policy.max_source_bytes,
        "minWidth": policy.min_width,
        "minHeight": policy.min_height,
        "minAspectRatio": policy.min_aspect_ratio,
        "maxAspectRatio": policy.max_aspect_ratio,
        "maxMegapixels": policy.max_megapixels,
        "undoWindowSeconds": policy.undo_window_seconds,
        "acceptedTypes": list(ACCEPTED_TYPES),
        "acceptedExtensions": sorted(e for e, t in EXTENSIONS.items() if t in ACCEPTED_TYPES),
        "variants": [{"name": v.name, "size": v.size} for v in policy.variants],
        "reviewEnabled": policy.photo_review_enabled,
    }


async def media_rules(request: Request) -> Response:
    """``GET /v1/meta/media-rules`` (public): what clients check before uploading."""
    policy = await SitePolicies(services(request).pool).load()
    return JSONResponse(rules_json(policy), headers={"cache-control": "public, max-age=30"})


def _admin(request: Request) -> tuple[Services, Principal]:
    svc, principal = caller(request)
    if not principal.is_admin:
        raise ApiError(403, "forbidden", "the site policy needs the admin role")
    return svc, principal


def _policy_json(policy: SitePolicy) -> dict[str, Any]:
    body = policy.to_json()
    body["updatedAt"] = policy.updated_at.isoformat() if policy.updated_at else None
    body["updatedBy"] = policy.updated_by
    return body


async def get_site_policy(request: Request) -> Response:
    svc, _ = _admin(request)
    return JSONResponse(_policy_json(await SitePolicies(svc.pool).load()))


async def put_site_policy(request: Request) -> Response:
    """Change any subset of the fields; validated as a whole, effective at once."""
    svc, principal = _admin(request)
    body = await read_json(request, _BODY)
    changes = {_COLUMN[name]: value for name, value in body.items()}
    try:
        policy = await SitePolicies(svc.pool).update(changes, by=principal.user_id)
    except PolicyInvalid as exc:
        field = _CAMEL.get(exc.field, exc.field)
        raise ApiError(422, "invalid_policy", f"{field}: {str(exc).partition(': ')[2]}") from None
    return JSONResponse(_policy_json(policy))


DEV_TOKEN_FIELDS = {
    "user": Field((str,), check=text(64, pattern=r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"))
}


async def dev_token(request: Request) -> Response:
    """``POST /dev/token`` (development only): a token for a dev user, so the page signs in
    without a login."""
    svc = services(request)
    if svc.settings.env is Environment.PRODUCTION:
        raise AuthError("not_found", "no such route", status=404)
    body = await read_json(request, DEV_TOKEN_FIELDS, allow_empty=True)
    user = body.get("user") or "dev"
    token = svc.auth.issue_token(user, ttl=12 * 3600)
    return JSONResponse({"token": token, "user": user, "expiresIn": 12 * 3600})
