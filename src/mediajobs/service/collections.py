"""Collections: the ordered media attached to an entity of the product (``listing/8412``).

``PUT /entities/{type}/{id}/media``  sync the whole ordered list in one transaction; guarded
                                     by ``If-Match`` with the collection's ``ETag``
                                     (``"c<version>"``, 412 ``stale_collection``).
``GET /entities/{type}/{id}/media``  the owner's view: every item, every status, its review.
``GET /public/entities/{type}/{id}`` no authentication: only ready items (past the review
                                     gate when review is on), render-ready fields only,
                                     with an ``ETag`` of the body itself and
                                     ``Cache-Control: public``, so a CDN can serve it.
                                     Each process keeps the rendered body (``PublicCache``)
                                     and checks it with one small query per request.

An entity belongs to the owner who first attaches to it; another user gets 404 for it, as
for another user's media. An admin, or a token with the scope ``collections:manage``,
manages any entity (with its owner's media). A sync that changes the collection records
``collection_updated`` on the owner's stream in the same transaction.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mediajobs.db.collections import (
    ENTITY_ID_PATTERN,
    ENTITY_TYPE_PATTERN,
    PROFILE,
    Attachment,
    Collection,
    CollectionRefused,
    CollectionView,
)
from mediajobs.db.media import Conn, MediaRecord
from mediajobs.realtime import Event
from mediajobs.realtime.events import collection_event
from mediajobs.service.body import read_body
from mediajobs.service.errors import ApiError
from mediajobs.service.media import media_item
from mediajobs.service.models import (
    CollectionEntry,
    CollectionSync,
    OwnerCollection,
    PublicCollection,
    PublicMedia,
    one_of,
    to_json,
)
from mediajobs.service.state import RenderedPublic, Services, caller, services
from mediajobs.storage.base import Locator

_ENTITY_TYPE = re.compile(ENTITY_TYPE_PATTERN)
_ENTITY_ID = re.compile(ENTITY_ID_PATTERN)
_ETAG = re.compile(r'^"c(0|[1-9][0-9]{0,17})"$')  # an ETag matches only as written
# Purposes a cover is taken from, in order of preference.
COVER_PURPOSES = ("cover", "gallery")
# HTTP status of each refusal of a sync.
REFUSAL_STATUS = {
    "entity_not_found": 404,
    "media_not_found": 404,
    "stale_collection": 412,
    "second_profile": 422,
    "duplicate_media": 422,
}


def _entity(request: Request) -> tuple[str, str]:
    """The path's ``(type, id)``; 400 ``invalid_entity`` when either is not a valid name."""
    entity_type = request.path_params["entity_type"]
    entity_id = request.path_params["entity_id"]
    if not _ENTITY_TYPE.fullmatch(entity_type):
        raise ApiError(400, "invalid_entity", f"an entity type matches {ENTITY_TYPE_PATTERN}")
    if not _ENTITY_ID.fullmatch(entity_id):
        raise ApiError(400, "invalid_entity", f"an entity id matches {ENTITY_ID_PATTERN}")
    return entity_type, entity_id


def _entity_not_found() -> ApiError:
    return ApiError(404, "entity_not_found", "no such entity")


def owner_etag(version: int) -> str:
    """The owner's ETag of a collection at ``version`` (what ``If-Match`` names)."""
    return f'"c{version}"'


def if_match_versions(header: str) -> frozenset[int] | None:
    """The versions an ``If-Match`` header (RFC 9110 section 13.1.1) accepts: None for
    ``*`` (any), else the versions of its strong ``"c<n>"`` tags (a weak or foreign tag
    never matches, so it contributes nothing and the write gets 412)."""
    tags = [tag.strip() for tag in header.split(",") if tag.strip()]
    if tags == ["*"]:
        return None
    return frozenset(int(match.group(1)) for tag in tags if (match := _ETAG.match(tag)))


# -- the owner's view ----------------------------------------------------------------------


async def owner_view(svc: Services, view: CollectionView) -> OwnerCollection:
    """The owner's view of ``view``: each item as ``GET /media/{id}`` shows it."""
    collection = view.collection
    return OwnerCollection(
        entity_type=collection.entity_type,
        entity_id=collection.entity_id,
        owner_id=collection.owner_id,
        version=collection.version,
        items=[
            CollectionEntry(
                media_id=attachment.media_id,
                purpose=attachment.purpose,
                position=attachment.position,
                media=await media_item(svc, record),
            )
            for attachment, record in view.items
        ],
    )


def _owner_response(body: OwnerCollection) -> JSONResponse:
    return JSONResponse(
        to_json(body), headers={"etag": owner_etag(body.version), "cache-control": "no-store"}
    )


async def get_collection(request: Request) -> Response:
    """``GET /entities/{type}/{id}/media``: the owner's view (an admin's, or a
    ``collections:manage`` token's, of any entity)."""
    svc, principal = caller(request)
    entity_type, entity_id = _entity(request)
    view = await svc.collections.view(entity_type, entity_id)
    if view is None:
        raise _entity_not_found()
    if view.collection.owner_id != principal.user_id and not principal.manages_collections:
        raise _entity_not_found()
    return _owner_response(await owner_view(svc, view))


async def put_collection(request: Request) -> Response:
    """``PUT /entities/{type}/{id}/media``: make the collection exactly the body's ordered
    list (attach, detach, reorder) in one transaction; 200 with the owner's view."""
    svc, principal = caller(request)
    entity_type, entity_id = _entity(request)
    body = await read_body(request, CollectionSync)
    settings = svc.settings
    if len(body.items) > settings.collection_max_items:
        raise ApiError(
            422, "invalid_field", f"items: at most {settings.collection_max_items} items"
        )
    for n, entry in enumerate(body.items):
        if entry.purpose not in settings.collection_purposes:
            raise ApiError(
                422,
                "invalid_field",
                f"items[{n}].purpose: must be one of {one_of(settings.collection_purposes)}",
            )
    if_version, if_exists = _preconditions(request)
    recorded: list[Event] = []

    async def record_sync(conn: Conn, changed: Collection) -> None:
        event = collection_event(
            changed.owner_id, changed.entity_type, changed.entity_id, changed.version, "sync"
        )
        recorded.extend(await svc.recorder.record_events(conn, [event]))

    try:
        await svc.collections.sync(
            entity_type,
            entity_id,
            principal.user_id,
            [(entry.media_id, entry.purpose) for entry in body.items],
            if_version=if_version,
            if_exists=if_exists,
            manage_any=principal.manages_collections,
            on_change=record_sync,
        )
    except CollectionRefused as exc:
        raise ApiError(REFUSAL_STATUS[exc.code], exc.code, str(exc)) from None
    await svc.recorder.committed(recorded)
    view = await svc.collections.view(entity_type, entity_id)
    if view is None:  # an empty list for an entity nobody has: nothing was made
        empty = OwnerCollection(
            entity_type=entity_type,
            entity_id=entity_id,
            owner_id=principal.user_id,
            version=0,
            items=[],
        )
        return _owner_response(empty)
    return _owner_response(await owner_view(svc, view))


def _preconditions(request: Request) -> tuple[frozenset[int] | None, bool]:
    """What the sync's ``If-Match`` (RFC 9110 section 13.1.1; every header line) and
    ``If-None-Match: *`` (13.1.2: only if the collection is new) ask: the versions the
    collection must be at (None: any), and whether it must exist already (``*``). The
    repository checks both under the entity's lock, after the owner."""
    if_match = _header(request, "if-match")
    versions = None if if_match is None else if_match_versions(if_match)
    if_exists = if_match is not None and versions is None  # "*"
    if_none_match = _header(request, "if-none-match")
    if if_none_match is not None and if_none_match.strip() == "*":
        versions = frozenset({0}) if versions is None else versions & {0}
    return versions, if_exists


def _header(request: Request, name: str) -> str | None:
    """Every line of header ``name``, joined as one list (RFC 9110 section 5.3), or None."""
    lines = request.headers.getlist(name)
    return ", ".join(lines) if lines else None


# -- the public read -----------------------------------------------------------------------


def public_item(svc: Services, attachment: Attachment, record: MediaRecord) -> PublicMedia:
    """``record`` as the public sees it: the permanent public URLs of its variants (from
    each locator's own store), its blur placeholder and alt text; nothing else (no locator,
    no source, no EXIF or GPS, no owner). Raises 503 ``public_urls_not_configured`` when a
    variant's bucket has no public base URL: a signed URL expires while CDNs keep the body,
    and names the bucket and the signing key."""
    urls: dict[str, str] = {}
    sizes: list[tuple[int, int, str]] = []  # (width, height, url), one per distinct object
    for variant in record.variants.values():
        locator = variant["locator"]
        if locator in urls:
            continue
        url = svc.stores.public_url(Locator.parse(locator))
        if url is None:
            raise ApiError(
                503,
                "public_urls_not_configured",
                "public reads need permanent URLs: set STORAGE_PUBLIC_BASE_URL (a CDN or the "
                "bucket's public URL) for the bucket that holds this collection's photos",
            )
        urls[locator] = url
        sizes.append((int(variant["width"]), int(variant["height"]), url))
    sizes.sort()
    width, height, src = sizes[-1]
    return PublicMedia.model_validate(
        {
            "id": record.id,
            "src": src,
            "thumbnailSrc": sizes[0][2],
            "srcset": ", ".join(f"{url} {w}w" for w, _, url in sizes),
            "blurDataURL": record.blur_data_url,
            "width": width,
            "height": height,
            "altText": record.alt_text,
            "purpose": attachment.purpose,
        }
    )


def derived_images(
    items: Sequence[PublicMedia],
) -> tuple[PublicMedia | None, PublicMedia | None]:
    """The profile image (the ``profile`` item) and the cover (the first item whose purpose
    is the first of ``COVER_PURPOSES`` present) of the public ``items``."""
    profile = next((item for item in items if item.purpose == PROFILE), None)
    for purpose in COVER_PURPOSES:
        cover = next((item for item in items if item.purpose == purpose), None)
        if cover is not None:
            return profile, cover
    return profile, None


async def public_collection(request: Request) -> Response:
    """``GET /public/entities/{type}/{id}``: no authentication. Answers 304 when
    ``If-None-Match`` names the current ETag (a hash of the body: it changes exactly when
    what the public sees changes)."""
    svc = services(request)
    key = _entity(request)
    fingerprint = await svc.collections.public_fingerprint(*key)
    if fingerprint is None:
        raise _entity_not_found()
    rendered = svc.public_cache.get(key, fingerprint)
    if rendered is None:
        rendered = await render_public(svc, *key)
        svc.public_cache.put(key, rendered)
    headers = {
        "etag": rendered.etag,
        "cache-control": f"public, max-age={int(svc.settings.public_max_age)}",
    }
    if _none_match(_header(request, "if-none-match"), rendered.etag):
        return Response(status_code=304, headers=headers)
    return Response(rendered.content, media_type="application/json", headers=headers)


async def render_public(svc: Services, entity_type: str, entity_id: str) -> RenderedPublic:
    """The public read of ``entity_type/entity_id`` as compact JSON, with its ETag (the
    first 128 bits of the body's SHA-256, hex) and the fingerprint of the very rows it was
    rendered from (one snapshot)."""
    found = await svc.collections.public_view(entity_type, entity_id)
    if found is None:
        raise _entity_not_found()
    fingerprint, view = found
    items = [
        public_item(svc, attachment, record) for attachment, record in view.items if record.variants
    ]
    profile, cover = derived_images(items)
    body = PublicCollection(
        entity_type=entity_type,
        entity_id=entity_id,
        items=items,
        profile_image=profile,
        cover=cover,
    )
    content = json.dumps(
        to_json(body), separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()
    etag = '"' + hashlib.sha256(content).hexdigest()[:32] + '"'
    return RenderedPublic(fingerprint, content, etag)


def _none_match(header: str | None, etag: str) -> bool:
    """Whether ``If-None-Match`` matches ``etag`` (weak comparison, RFC 9110 section
    13.1.2: ``W/"x"`` matches ``"x"``; ``*`` matches any)."""
    if header is None:
        return False
    tags = [tag.strip() for tag in header.split(",")]
    return "*" in tags or any(tag.removeprefix("W/") == etag for tag in tags)
