"""The media library routes: presigned uploads, completion into a processing job, listing,
one item, edits, delete and restore.

Every route answers for the caller's own media only; another user's id or path is a 404,
never a 403. Nothing here waits on processing: completion and deletion return a job id.
"""

from __future__ import annotations

import logging
import posixpath
import re
import uuid
from typing import TypeVar

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mediajobs.db.media import MediaRecord, MediaStatus
from mediajobs.db.tags import TooManyTags
from mediajobs.errors import InvalidKey, StorageError
from mediajobs.imaging.formats import ACCEPTED_TYPES, normalize_type
from mediajobs.queue.kinds import MEDIA_DELETE, MEDIA_PROCESS
from mediajobs.queue.models import JobSpec, JobState
from mediajobs.realtime import Event
from mediajobs.service.auth import Principal
from mediajobs.service.body import read_body, read_query
from mediajobs.service.errors import ApiError
from mediajobs.service.models import (
    Accepted,
    DeleteAccepted,
    FailedJob,
    MediaItem,
    MediaList,
    MediaPatch,
    MediaQuery,
    PresignedUpload,
    Restore,
    UploadComplete,
    UploadInit,
    to_json,
)
from mediajobs.service.paging import decode_cursor, page_of
from mediajobs.service.state import Services, caller
from mediajobs.storage.keys import (
    display_filename,
    sanitize_filename,
    upload_key,
    user_prefix,
    validate_key,
    validate_prefix,
)
from mediajobs.storage.urls import variant_urls
from mediajobs.types import JSON
from mediajobs.vision.tags import normalise_tag

log = logging.getLogger(__name__)

Item = TypeVar("Item", bound=MediaItem)

UPLOAD_URL_TTL = 900.0  # seconds a presigned upload stays valid
IN_FLIGHT_RETRY_AFTER = 2  # seconds: about one image's processing, when a slot may be free


def _not_found() -> ApiError:
    return ApiError(404, "media_not_found", "no such media")


def _parse_id(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


# -- items ---------------------------------------------------------------------------------


async def media_item(svc: Services, record: MediaRecord, *, detail: bool = False) -> MediaItem:
    """The public shape of an item; URLs come from the store, GPS never appears. The detail
    view adds camera data and each tag's source."""
    return await shaped_item(svc, record, MediaItem, detail=detail)


async def shaped_item(
    svc: Services, record: MediaRecord, shape: type[Item], *, detail: bool = False, **extra: JSON
) -> Item:
    """``media_item`` as ``shape`` (a subclass of ``MediaItem``), whose own fields come in
    ``extra`` (a search hit's score)."""
    variants, url = await variant_urls(record.variants, svc.stores)
    details: dict[str, JSON] = {}
    if detail:
        tags = await svc.tags.of_item(record.id)
        details = {
            "exif": record.exif,  # camera data; GPS is kept apart and never shown
            "tagDetails": [
                {"tag": t.tag, "source": t.source.value, "confidence": t.confidence} for t in tags
            ],
        }
    return shape.model_validate(
        {
            "id": record.id,
            "path": record.source.key,
            "status": record.status,
            "kind": record.kind,
            "purpose": record.purpose,
            "width": record.width,
            "height": record.height,
            "url": url,
            "variants": variants,
            "blurDataURL": record.blur_data_url,
            "altText": record.alt_text,
            "sortOrder": record.sort_order,
            "createdAt": record.created_at,
            "jobId": record.job_id,
            "filename": record.original_filename,
            "contentType": record.detected_type,
            "detectedType": record.detected_type,
            "bytes": record.bytes,
            "replaces": record.replaces,
            "duplicateOf": record.duplicate_of,
            "error": record.error,
            "review": record.review,
            "failedJob": await _failed_job(svc, record),
            "caption": record.caption,
            "tags": record.tags,
            **details,
            **extra,
        }
    )


async def _failed_job(svc: Services, record: MediaRecord) -> FailedJob | None:
    """What stopped an item, when a job did: ``{id, kind, error: {code, message, retryable}}``
    of its processing job (a failed item) or of its review job (an item in review whose
    review failed), if that job failed; else None. ``POST /jobs/{id}/retry`` runs it again
    when ``retryable``."""
    job_id: object = None
    if record.status is MediaStatus.FAILED:
        job_id = record.job_id
    elif record.status is MediaStatus.IN_REVIEW and record.review:
        job_id = record.review.get("jobId")
    if job_id is None or (job_uuid := _parse_id(str(job_id))) is None:
        return None
    job = await svc.queue.get(job_uuid)
    if job is None or job.state is not JobState.FAILED or job.owner_id != record.owner_id:
        return None
    error = job.error or {}
    return FailedJob.model_validate(
        {
            "id": job.id,
            "kind": job.kind,
            "error": {
                "code": str(error.get("code") or "failed"),
                "message": str(error.get("message") or ""),
                "retryable": bool(error.get("retryable", False)),
            },
        }
    )


async def list_media(request: Request) -> Response:
    """``GET /media``: the caller's library, newest first. Without ``status`` it is the
    gallery (ready items only: the review gate); ``status`` shows the owner other states."""
    svc, principal = caller(request)
    query = read_query(request, MediaQuery)
    after = decode_cursor(query.cursor)
    key_prefix = None
    if query.prefix is not None:
        try:
            key_prefix = validate_prefix(user_prefix(principal.user_id) + query.prefix.lstrip("/"))
        except InvalidKey as exc:
            raise ApiError(400, "invalid_prefix", str(exc)) from None
    records = await svc.media.page(
        principal.user_id,
        statuses=(query.status or MediaStatus.READY,),
        purpose=query.purpose,
        key_prefix=key_prefix,
        tag=None if query.tag is None else _tag(query.tag, "tag"),
        after=after,
        limit=query.limit + 1,
    )
    records, next_cursor = page_of(records, query.limit)
    items = [await media_item(svc, record) for record in records]
    return JSONResponse(to_json(MediaList(items=items, next_cursor=next_cursor)))


async def get_media(request: Request) -> Response:
    svc, principal = caller(request)
    record = await visible(svc, principal, request.path_params["media_id"])
    return JSONResponse(to_json(await media_item(svc, record, detail=True)))


async def visible(svc: Services, principal: Principal, ident: str) -> MediaRecord:
    """The caller's item by id, not deleted; else 404 ``media_not_found`` (another user's
    item too)."""
    media_id = _parse_id(ident)
    record = None
    if media_id is not None:
        record = await svc.media.get(media_id, principal.user_id)
    if record is None or record.status is MediaStatus.DELETED:
        raise _not_found()
    return record


def _tag(text: str, field: str) -> str:
    """A tag as typed, normalised (seed 003); 400 ``invalid_tag`` when nothing is left."""
    tag = normalise_tag(text)
    if tag is None:
        raise ApiError(
            400, "invalid_tag", f"{field}: {text!r} is no tag (empty without its stop words)"
        )
    return tag


async def patch_media(request: Request) -> Response:
    """``PATCH /media/{id}``: alt text, caption, sort order, purpose, and the owner's own
    tags (``tags: {add, remove}``), in one transaction."""
    svc, principal = caller(request)
    record = await visible(svc, principal, request.path_params["media_id"])
    body = await read_body(request, MediaPatch)
    # The fields given, by their column names (the model's field names).
    changes = {name: getattr(body, name) for name in body.model_fields_set if name != "tags"}
    add: tuple[str, ...] = ()
    remove: tuple[str, ...] = ()
    if body.tags is not None:
        add = tuple(dict.fromkeys(_tag(t, "tags.add") for t in body.tags.add))
        remove = tuple(dict.fromkeys(_tag(t, "tags.remove") for t in body.tags.remove))
    try:
        async with svc.media.transaction() as conn:
            if add or remove:
                await svc.tags.edit_user_tags(conn, record.id, add=add, remove=remove)
            updated = await svc.media.update_fields(
                record.id, principal.user_id, changes, conn=conn
            )
            if updated is None:
                raise _not_found()
    except TooManyTags as exc:
        raise ApiError(409, "too_many_tags", str(exc)) from None
    return JSONResponse(to_json(await media_item(svc, updated, detail=True)))


# -- uploads -------------------------------------------------------------------------------


# Declared types a presigned upload may bind onto the stored object: an image type whose
# content a browser never runs. SVG and other XML images can carry scripts (stored XSS
# wherever the object is served with its type), and non-image types (text/html) even more
# so. Which image the bytes really are is decided by the worker, not here.
_BINDABLE_TYPE = re.compile(r"image/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}")


def _bound_type(content_type: str | None) -> str:
    """The content type the upload is signed for: the declared one, or
    ``application/octet-stream`` when it is empty or generic. Refuses (415) a declared type
    that is not an image, or is an image type that can carry scripts; never the file name,
    and never one image type for another (the bytes decide that, after the upload)."""
    declared = normalize_type(content_type)
    if not declared:
        return "application/octet-stream"
    if not _BINDABLE_TYPE.fullmatch(declared) or "svg" in declared or declared.endswith("+xml"):
        raise ApiError(
            415,
            "unsupported_type",
            f"{declared} cannot be uploaded: declare an image type ({', '.join(ACCEPTED_TYPES)})"
            " or none",
        )
    return declared


async def upload_init(request: Request) -> Response:
    """``POST /media/upload/init``: a presigned request that writes straight to storage."""
    svc, principal = caller(request)
    body = await read_body(request, UploadInit)
    policy = await svc.policies.load()
    if body.size > policy.max_source_bytes:
        raise ApiError(
            413, "file_too_large", f"files are limited to {policy.max_source_bytes} bytes"
        )
    content_type = _bound_type(body.content_type)
    key = upload_key(principal.user_id, body.filename)
    await svc.media.start_upload(
        key, principal.user_id, display_filename(body.filename), content_type
    )
    signed = await svc.stores.active.presign_upload(
        key, content_type, policy.max_source_bytes, expires_in=UPLOAD_URL_TTL
    )
    answer: dict[str, object] = {
        "uploadURL": signed.url,
        "method": signed.method,
        "headers": dict(signed.headers),
        "objectPath": key,
        "expiresAt": signed.expires_at,
    }
    if signed.fields:
        answer["fields"] = dict(signed.fields)
    return JSONResponse(to_json(PresignedUpload.model_validate(answer)))


def _owned_key(principal: Principal, path: str, folder: str = "") -> str | None:
    """``path`` when it is a valid key under the caller's own prefix (or ``folder`` of it),
    else None: another user's path and a malformed one look exactly like a missing one."""
    try:
        key = validate_key(path)
    except InvalidKey:
        return None
    return key if key.startswith(user_prefix(principal.user_id, folder)) else None


async def upload_complete(request: Request) -> Response:
    """``POST /media/upload/complete``: the media row and its ``media.process`` job, in one
    transaction; 202 with both ids. Completing the same object again returns the same."""
    svc, principal = caller(request)
    body = await read_body(request, UploadComplete)
    key = _owned_key(principal, body.object_path, "uploads")
    if key is None:
        raise ApiError(404, "upload_not_found", "no such uploaded object")
    media = svc.media
    locator = svc.stores.locate(key)
    existing = await media.by_source_key(principal.user_id, key, include_deleted=True)
    if existing is not None and existing.source_locator == str(locator):
        return _accepted(existing.job_id, existing.id)
    replaces = None
    if body.replaces:
        replaces = _parse_id(body.replaces)
        target = None if replaces is None else await media.get(replaces, principal.user_id)
        if target is None or target.status is MediaStatus.DELETED:
            raise ApiError(404, "media_not_found", "the media to replace does not exist")
    # Slow checks first, with no database connection held.
    info = await svc.stores.active.head(key)
    if info is None:
        raise ApiError(404, "upload_not_found", "nothing was uploaded to that objectPath")
    policy = await svc.policies.load()
    if info.size > policy.max_source_bytes:
        # Refused for good: the object would otherwise stay in the bucket forever.
        await _discard(svc, key)
        raise ApiError(413, "file_too_large", f"files are limited to {policy.max_source_bytes}")
    async with media.transaction() as conn:
        # One owner's completes take turns from here to commit: the count below sees every
        # item an earlier complete inserted, so the limit holds under concurrency.
        await media.lock_owner(principal.user_id, conn)
        # The name the user gave at init; an object from before names were kept shows its
        # key's sanitized name.
        filename = await media.take_upload(key, principal.user_id, conn=conn)
        record, created = await media.create(
            owner_id=principal.user_id,
            source=locator,
            purpose=body.purpose or "gallery",
            original_filename=filename or sanitize_filename(posixpath.basename(key)),
            declared_type=info.content_type,
            alt_text=body.alt_text,
            replaces=replaces,
            conn=conn,
        )
        if not created:
            return _accepted(record.job_id, record.id)
        if await media.in_flight(principal.user_id, conn) > policy.max_batch_size:
            raise ApiError(  # rolls back the insert; the object stays for a later retry
                429,
                "too_many_uploads",
                f"at most {policy.max_batch_size} uploads may be processing at once",
                headers={"Retry-After": str(IN_FLIGHT_RETRY_AFTER)},
            )
        job = await svc.queue.enqueue(
            JobSpec(
                MEDIA_PROCESS,
                principal.user_id,
                {"mediaId": str(record.id)},
                idempotency_key=f"{MEDIA_PROCESS}:{record.id}",
            ),
            conn=conn,
        )
        await media.set_job(record.id, job.id, conn=conn)
    return _accepted(job.id, record.id)


async def _discard(svc: Services, key: str) -> None:
    """Delete an uploaded object that completion refused for good; a store failure is only
    logged (the caller still gets the refusal)."""
    try:
        await svc.stores.active.delete(key)
    except StorageError as exc:
        log.warning("could not delete refused upload %s: %s", key, exc)


def _accepted(job_id: uuid.UUID | None, media_id: uuid.UUID) -> JSONResponse:
    return JSONResponse(to_json(Accepted(job_id=job_id, media_id=media_id)), status_code=202)


# -- delete and restore --------------------------------------------------------------------


async def _by_path(svc: Services, principal: Principal, path: str) -> MediaRecord | None:
    """An item by its id or its path (the source object's key)."""
    media = svc.media
    media_id = _parse_id(path)
    if media_id is not None:
        return await media.get(media_id, principal.user_id)
    key = _owned_key(principal, path)
    if key is None:
        return None
    return await media.by_source_key(principal.user_id, key, include_deleted=True)


async def delete_media(request: Request) -> Response:
    """``DELETE /media/{path}``: hidden at once; its objects are purged after the undo
    window by the job whose id this returns."""
    svc, principal = caller(request)
    record = await _by_path(svc, principal, request.path_params["path"])
    if record is None or record.status is MediaStatus.DELETED:
        raise _not_found()
    policy = await svc.policies.load()
    media = svc.media
    async with media.transaction() as conn:
        hidden = await media.soft_delete(
            record.id, principal.user_id, undo_window=policy.undo_window_seconds, conn=conn
        )
        assert hidden is not None
        assert hidden.deleted_at is not None
        payload = {"mediaId": str(record.id), "deletedAt": hidden.deleted_at.isoformat()}
        job = await svc.queue.enqueue(JobSpec(MEDIA_DELETE, principal.user_id, payload), conn=conn)
        recorded = await svc.recorder.collections_changed(conn, record.id, "deleted", job.id)
    await svc.recorder.committed(recorded)
    accepted = DeleteAccepted(job_id=job.id, media_id=record.id, purge_after=hidden.purge_after)
    return JSONResponse(to_json(accepted), status_code=202)


async def restore_media(request: Request) -> Response:
    """``POST /media/restore``: undo a delete inside the undo window."""
    svc, principal = caller(request)
    body = await read_body(request, Restore)
    record = await _by_path(svc, principal, body.path)
    if record is None:
        raise _not_found()
    async with svc.media.transaction() as conn:
        restored = await svc.media.restore(record.id, principal.user_id, conn=conn)
        recorded: list[Event] = []
        if restored is not None:
            recorded = await svc.recorder.collections_changed(conn, record.id, "restored", None)
    await svc.recorder.committed(recorded)
    if restored is None:
        if record.status is MediaStatus.DELETED:
            raise ApiError(409, "undo_window_over", "the undo window is over")
        raise ApiError(409, "not_deleted", "this media is not deleted")
    return JSONResponse(to_json(await media_item(svc, restored, detail=True)))
