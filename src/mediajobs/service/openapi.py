"""``GET /openapi.json``: every route and schema of the API. A test keeps it in sync with the
routes the app really has, and schemathesis checks the app against it."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mediajobs import __version__
from mediajobs.db.policies import FIELDS, REVIEW_PROVIDERS
from mediajobs.imaging.formats import ACCEPTED_TYPES
from mediajobs.queue.models import JobState
from mediajobs.service.media import LISTABLE, PURPOSE_PATTERN

JSON_TYPE = "application/json"


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(
    properties: dict[str, Any], required: tuple[str, ...] = (), *, closed: bool = False
) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    if closed:
        schema["additionalProperties"] = False
    return schema


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {**schema, "nullable": True}


STRING = {"type": "string"}
INTEGER = {"type": "integer"}
NUMBER = {"type": "number"}
BOOLEAN = {"type": "boolean"}
ANY: dict[str, Any] = {}
UUID = {"type": "string", "format": "uuid"}
TIME = {"type": "string", "format": "date-time"}

_JSON_TYPES: dict[type, dict[str, Any]] = {
    int: INTEGER,
    float: NUMBER,
    bool: BOOLEAN,
    str: STRING,
    list: {"type": "array", "items": ref("Variant")},  # the variant list
}
POLICY_FIELDS: dict[str, Any] = {api: _JSON_TYPES[kind] for api, kind in FIELDS.values()} | {
    "photoReviewProvider": {"type": "string", "enum": list(REVIEW_PROVIDERS)}
}

SCHEMAS: dict[str, Any] = {
    "Error": obj(
        {"error": obj({"code": STRING, "message": STRING}, ("code", "message"), closed=True)},
        ("error",),
        closed=True,
    ),
    "VariantRef": obj({"url": STRING, "width": INTEGER, "height": INTEGER}, ("url",)),
    "MediaItem": obj(
        {
            "id": UUID,
            "path": STRING,
            "status": {"type": "string", "enum": list(LISTABLE)},
            "kind": STRING,
            "purpose": STRING,
            "width": nullable(INTEGER),
            "height": nullable(INTEGER),
            "url": nullable(STRING),
            "variants": {"type": "object", "additionalProperties": ref("VariantRef")},
            "blurDataURL": nullable(STRING),
            "altText": nullable(STRING),
            "sortOrder": INTEGER,
            "createdAt": TIME,
            "jobId": nullable(UUID),
            "filename": nullable(STRING),
            "contentType": nullable(STRING),
            "detectedType": nullable(STRING),
            "bytes": nullable(INTEGER),
            "replaces": nullable(UUID),
            "duplicateOf": nullable(UUID),
            "error": nullable({"type": "object"}),
            "review": nullable({"type": "object"}),
            "failedJob": nullable(ref("FailedJob")),
            "exif": nullable({"type": "object"}),
        },
        ("id", "path", "status", "variants", "createdAt"),
    ),
    "FailedJob": obj(
        {
            "id": UUID,
            "kind": STRING,
            "error": obj(
                {"code": STRING, "message": STRING, "retryable": BOOLEAN},
                ("code", "message", "retryable"),
            ),
        },
        ("id", "kind", "error"),
    ),
    "MediaList": obj(
        {"items": {"type": "array", "items": ref("MediaItem")}, "nextCursor": nullable(STRING)},
        ("items", "nextCursor"),
    ),
    "Job": obj(
        {
            "id": UUID,
            "kind": STRING,
            "state": {"type": "string", "enum": [s.value for s in JobState]},
            "progress": NUMBER,
            "message": nullable(STRING),
            "result": {"nullable": True},
            "error": nullable({"type": "object"}),
            "attempt": INTEGER,
            "maxAttempts": INTEGER,
            "payload": {"type": "object"},
            "createdAt": TIME,
            "updatedAt": TIME,
            "startedAt": nullable(TIME),
            "finishedAt": nullable(TIME),
        },
        ("id", "kind", "state"),
    ),
    "JobList": obj(
        {"items": {"type": "array", "items": ref("Job")}, "nextCursor": nullable(STRING)},
        ("items", "nextCursor"),
    ),
    "UploadInit": obj(
        {
            "filename": {"type": "string", "minLength": 1, "maxLength": 255},
            "contentType": nullable({"type": "string", "maxLength": 255}),
            "size": {"type": "integer", "minimum": 1},
        },
        ("filename", "size"),
        closed=True,
    ),
    "PresignedUpload": obj(
        {
            "uploadURL": STRING,
            "method": {"type": "string", "enum": ["PUT", "POST"]},
            "headers": {"type": "object", "additionalProperties": STRING},
            "fields": {"type": "object", "additionalProperties": STRING},
            "objectPath": STRING,
            "expiresAt": nullable(TIME),
        },
        ("uploadURL", "method", "headers", "objectPath"),
    ),
    "UploadComplete": obj(
        {
            "objectPath": {"type": "string", "maxLength": 1024},
            "purpose": {"type": "string", "pattern": f"^{PURPOSE_PATTERN}$"},
            "replaces": nullable(STRING),
            "altText": nullable({"type": "string", "maxLength": 1000}),
        },
        ("objectPath",),
        closed=True,
    ),
    "Accepted": obj({"jobId": nullable(UUID), "mediaId": UUID}, ("jobId", "mediaId")),
    "DeleteAccepted": obj(
        {"jobId": UUID, "mediaId": UUID, "purgeAfter": nullable(TIME)}, ("jobId", "mediaId")
    ),
    "JobAccepted": obj({"jobId": UUID, "state": STRING, "retryOf": UUID}, ("jobId",)),
    "MediaPatch": obj(
        {
            "altText": nullable({"type": "string", "maxLength": 1000}),
            "sortOrder": INTEGER,
            "purpose": {"type": "string", "pattern": f"^{PURPOSE_PATTERN}$"},
        },
        closed=True,
    ),
    "Restore": obj({"path": {"type": "string", "maxLength": 1024}}, ("path",), closed=True),
    "Variant": obj({"name": STRING, "size": INTEGER}, ("name", "size")),
    "MediaRules": obj(
        {
            "maxBatchSize": INTEGER,
            "maxSourceBytes": INTEGER,
            "minWidth": INTEGER,
            "minHeight": INTEGER,
            "minAspectRatio": NUMBER,
            "maxAspectRatio": NUMBER,
            "maxMegapixels": NUMBER,
            "undoWindowSeconds": INTEGER,
            "acceptedTypes": {"type": "array", "items": {"enum": list(ACCEPTED_TYPES)}},
            "acceptedExtensions": {"type": "array", "items": STRING},
            "variants": {"type": "array", "items": ref("Variant")},
            "reviewEnabled": BOOLEAN,
        },
        ("maxSourceBytes", "acceptedTypes", "variants"),
    ),
    "SitePolicy": obj(
        {**POLICY_FIELDS, "updatedAt": nullable(TIME), "updatedBy": nullable(STRING)}
    ),
    "SitePolicyUpdate": obj(POLICY_FIELDS, closed=True),
    "Ticket": obj({"ticket": STRING, "expiresAt": {"nullable": True}}, ("ticket",)),
    "DevTokenRequest": obj({"user": STRING}, closed=True),
    "DevToken": obj({"token": STRING, "user": STRING, "expiresIn": INTEGER}, ("token",)),
    "Health": obj({"status": STRING}, ("status",)),
    "Ready": obj({"status": STRING, "checks": {"type": "object"}}, ("status",)),
}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {JSON_TYPE: {"schema": schema}}}


ERRORS = {"default": _json(ref("Error"), "an error, in the one error shape")}
SECURED: list[dict[str, list[str]]] = [{"bearer": []}]


def op(
    summary: str,
    responses: dict[str, Any],
    *,
    body: str | None = None,
    params: list[dict[str, Any]] | None = None,
    public: bool = False,
) -> dict[str, Any]:
    operation: dict[str, Any] = {"summary": summary, "responses": {**responses, **ERRORS}}
    if not public:
        operation["security"] = SECURED
    if body is not None:
        operation["requestBody"] = {"required": True, "content": {JSON_TYPE: {"schema": ref(body)}}}
    if params:
        operation["parameters"] = params
    return operation


def path_param(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": STRING}


def query(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema}


CURSOR = query("cursor", STRING)
LIMIT = query("limit", {"type": "integer", "minimum": 1, "maximum": 200})
SSE = {
    "200": {
        "description": "a text/event-stream of job events (see docs/events.md)",
        "content": {"text/event-stream": {"schema": STRING}},
    }
}


def spec(*, development: bool, memory_store: bool, page: bool = False) -> dict[str, Any]:
    paths: dict[str, Any] = {
        "/healthz": {"get": op("liveness", {"200": _json(ref("Health"))}, public=True)},
        "/readyz": {
            "get": op(
                "readiness: Postgres, Redis, storage", {"200": _json(ref("Ready"))}, public=True
            )
        },
        "/metrics": {
            "get": op(
                "Prometheus metrics",
                {"200": {"description": "text", "content": {"text/plain": {"schema": STRING}}}},
                public=True,
            )
        },
        "/openapi.json": {
            "get": op("this document", {"200": _json({"type": "object"})}, public=True)
        },
        "/events": {
            "get": op(
                "every event of the caller's jobs, resumable with Last-Event-ID",
                SSE,
                params=[query("ticket", STRING), query("lastEventId", STRING)],
            )
        },
        "/events/ticket": {
            "post": op("a stream ticket for EventSource", {"200": _json(ref("Ticket"))})
        },
        "/jobs/{job_id}/events": {
            "get": op(
                "one job's events, ending after its last",
                SSE,
                params=[
                    path_param("job_id"),
                    query("ticket", STRING),
                    query("lastEventId", STRING),
                ],
            )
        },
        "/media": {
            "get": op(
                "the caller's library (ready items unless status is given)",
                {"200": _json(ref("MediaList"))},
                params=[
                    query("prefix", STRING),
                    query("status", {"type": "string", "enum": list(LISTABLE)}),
                    query("purpose", STRING),
                    CURSOR,
                    LIMIT,
                ],
            )
        },
        "/media/upload/init": {
            "post": op(
                "a presigned upload straight to storage",
                {"200": _json(ref("PresignedUpload"))},
                body="UploadInit",
            )
        },
        "/media/upload/complete": {
            "post": op(
                "create the media item and its processing job",
                {"202": _json(ref("Accepted"), "accepted")},
                body="UploadComplete",
            )
        },
        "/media/restore": {
            "post": op(
                "undo a delete inside the undo window",
                {"200": _json(ref("MediaItem"))},
                body="Restore",
            )
        },
        "/media/{media_id}": {
            "get": op(
                "one item", {"200": _json(ref("MediaItem"))}, params=[path_param("media_id")]
            ),
            "patch": op(
                "change altText, sortOrder or purpose",
                {"200": _json(ref("MediaItem"))},
                body="MediaPatch",
                params=[path_param("media_id")],
            ),
        },
        "/media/{path}": {
            "delete": op(
                "hide an item (by id or path) now; purge it after the undo window",
                {"202": _json(ref("DeleteAccepted"), "accepted")},
                params=[path_param("path")],
            )
        },
        "/jobs": {
            "get": op(
                "the caller's jobs",
                {"200": _json(ref("JobList"))},
                params=[
                    query("state", {"type": "string", "enum": [s.value for s in JobState]}),
                    query("kind", STRING),
                    CURSOR,
                    LIMIT,
                ],
            )
        },
        "/jobs/{job_id}": {
            "get": op("one job", {"200": _json(ref("Job"))}, params=[path_param("job_id")])
        },
        "/jobs/{job_id}/cancel": {
            "post": op(
                "cancel a job",
                {"202": _json(ref("JobAccepted"), "accepted")},
                params=[path_param("job_id")],
            )
        },
        "/jobs/{job_id}/retry": {
            "post": op(
                "run a failed, retryable job again",
                {"202": _json(ref("JobAccepted"), "accepted")},
                params=[path_param("job_id")],
            )
        },
        "/v1/meta/media-rules": {
            "get": op("the live upload rules", {"200": _json(ref("MediaRules"))}, public=True)
        },
        "/v1/admin/site-policies": {
            "get": op("the site policy (admin)", {"200": _json(ref("SitePolicy"))}),
            "put": op(
                "change the site policy (admin); validated, effective at once",
                {"200": _json(ref("SitePolicy"))},
                body="SitePolicyUpdate",
            ),
        },
    }
    if development:
        paths["/dev/token"] = {
            "post": {
                **op(
                    "a token for a dev user (development only)",
                    {"200": _json(ref("DevToken"))},
                    public=True,
                ),
                "requestBody": {
                    "required": False,
                    "content": {JSON_TYPE: {"schema": ref("DevTokenRequest")}},
                },
            }
        }
    if page:
        html = {"200": {"description": "HTML", "content": {"text/html": {"schema": STRING}}}}
        asset = {"200": {"description": "a file", "content": {"*/*": {"schema": STRING}}}}
        paths["/"] = {"get": op("the media library page", html, public=True)}
        paths["/static/{file}"] = {
            "get": op(
                "the page's script, styles and the JavaScript client",
                asset,
                params=[path_param("file")],
                public=True,
            )
        }
    if memory_store:
        paths["/storage/{key}"] = {
            "get": op(
                "an object of the in-memory store (development only)",
                {
                    "200": {"description": "the bytes", "content": {"*/*": {"schema": STRING}}},
                    "206": {"description": "a range", "content": {"*/*": {"schema": STRING}}},
                    "304": {"description": "not modified"},
                },
                params=[path_param("key")],
                public=True,
            ),
            "head": op(
                "an object's headers",
                {"200": {"description": "OK"}},
                params=[path_param("key")],
                public=True,
            ),
            "put": op(
                "a presigned upload into the in-memory store (development only)",
                {"200": {"description": "stored"}},
                params=[path_param("key")],
                public=True,
            ),
        }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "mediajobs",
            "version": __version__,
            "description": "Every media operation is an asynchronous job. See docs/api.md.",
        },
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
        },
    }


async def openapi(request: Request) -> Response:
    development, memory_store, page = request.app.state.openapi_flags
    return JSONResponse(spec(development=development, memory_store=memory_store, page=page))
