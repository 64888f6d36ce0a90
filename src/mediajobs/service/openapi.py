"""``GET /openapi.json``: every route of the API, OpenAPI 3.1. The schemas are generated from
the models of ``service/models.py`` (JSON Schema 2020-12, which OpenAPI 3.1 uses as is); this
module only lists the routes and which model each one reads and answers. A test keeps the
list in sync with the routes the app really has, and schemathesis checks the app against it.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from pydantic import BaseModel
from pydantic.json_schema import (
    GenerateJsonSchema,
    JsonSchemaMode,
    JsonSchemaValue,
    models_json_schema,
)
from pydantic_core import core_schema as cs
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mediajobs import __version__
from mediajobs.db.collections import ENTITY_ID_PATTERN, ENTITY_TYPE_PATTERN
from mediajobs.service import models as m

JSON_TYPE = "application/json"
REF_TEMPLATE = "#/components/schemas/{model}"
STRING = {"type": "string"}
EMPTY = {"type": "string", "maxLength": 0}

# A response: a model (its JSON), or a raw OpenAPI response object (streams, text, files).
Reply: TypeAlias = "type[BaseModel] | dict[str, Any]"


class _Generator(GenerateJsonSchema):
    """Pydantic's JSON Schema, without the noise: no per-field titles, and no
    ``"default": null`` on a field that is never null (an ``Omittable`` one)."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False

    def default_schema(self, schema: cs.WithDefaultSchema) -> JsonSchemaValue:
        json_schema = super().default_schema(schema)
        if json_schema.get("default", 0) is None and not _allows_null(json_schema):
            json_schema = {k: v for k, v in json_schema.items() if k != "default"}
        return json_schema


def _allows_null(schema: JsonSchemaValue) -> bool:
    kind = schema.get("type")
    if kind == "null" or (isinstance(kind, list) and "null" in kind):
        return True
    return any(_allows_null(branch) for branch in schema.get("anyOf", ()))


@dataclass(frozen=True)
class Op:
    """One operation: what it reads (body, query, path parameters) and answers."""

    summary: str
    responses: Mapping[str, Reply]
    body: type[m.Body] | None = None
    body_required: bool = True
    query: type[m.Query] | None = None
    path: tuple[str, ...] = ()
    public: bool = False
    parameters: tuple[dict[str, Any], ...] = ()  # more, as OpenAPI parameter objects
    models: tuple[tuple[type[BaseModel], JsonSchemaMode], ...] = field(init=False)

    def __post_init__(self) -> None:
        found: list[tuple[type[BaseModel], JsonSchemaMode]] = [
            (reply, "serialization") for reply in self.responses.values() if isinstance(reply, type)
        ]
        if self.body is not None:
            found.append((self.body, "validation"))
        if self.query is not None:
            found.append((self.query, "validation"))
        object.__setattr__(self, "models", tuple(found))


def _text(description: str, media_type: str = "text/plain") -> dict[str, Any]:
    return {"description": description, "content": {media_type: {"schema": STRING}}}


SSE = {"200": _text("a text/event-stream of job events (see docs/events.md)", "text/event-stream")}
LAST_EVENT_ID = {
    "name": "Last-Event-ID",
    "in": "header",
    "required": False,
    "description": "resume after this event id (what EventSource sends on reconnect; the"
    " lastEventId query parameter is the same): a non-negative integer of at most 19 digits,"
    " else 400 invalid_last_event_id",
    "schema": {"type": "string", "pattern": "^\\s*[0-9]{0,19}\\s*$"},
}
# The signed query of a write or delete URL of the in-memory store: what ``presign`` gives.
SIGNED = (
    ("ct", "the Content-Type signed in; a PUT must send it (else 415 content_type_mismatch)"),
    ("max", "the most bytes a PUT may send (else 413 too_large), in digits"),
    ("exp", "when the URL expires, Unix seconds (403 signature_expired after)"),
    ("sig", "the HMAC over method, key, ct, max and exp (403 signature_invalid)"),
)
SIGNED_QUERY = tuple(
    {
        "name": name,
        "in": "query",
        "required": True,
        "description": f"{about}; missing: 403 signature_missing",
        "schema": STRING,
    }
    for name, about in SIGNED
)
SITE_POLICY = {"200": m.SitePolicyView}
ENTITY = tuple(
    {
        "name": f"entity_{part}",
        "in": "path",
        "required": True,
        "description": f"the entity's {part}, e.g. {example} (else 400 invalid_entity)",
        "schema": {"type": "string", "pattern": f"^{pattern}$"},
    }
    for part, example, pattern in (
        ("type", "listing", ENTITY_TYPE_PATTERN),
        ("id", "8412", ENTITY_ID_PATTERN),
    )
)
IF_MATCH = {
    "name": "If-Match",
    "in": "header",
    "required": False,
    "description": 'the collection\'s ETag as read ("c<version>"), or *: the sync applies only'
    " if the collection is still at that version (else 412 stale_collection)",
    "schema": STRING,
}
IF_NONE_MATCH = {
    "name": "If-None-Match",
    "in": "header",
    "required": False,
    "description": "an ETag of an earlier answer: 304 while the public content is unchanged",
    "schema": STRING,
}


def operations(*, development: bool, memory_store: bool, page: bool) -> dict[str, dict[str, Op]]:
    """The routes of the app: path -> method -> operation."""
    paths: dict[str, dict[str, Op]] = {
        "/healthz": {"get": Op("liveness", {"200": m.Health}, public=True)},
        "/readyz": {
            "get": Op("readiness: Postgres, Redis, storage", {"200": m.Ready}, public=True)
        },
        "/metrics": {"get": Op("Prometheus metrics", {"200": _text("text")}, public=True)},
        "/openapi.json": {
            "get": Op(
                "this document",
                {
                    "200": {
                        "description": "OK",
                        "content": {JSON_TYPE: {"schema": {"type": "object"}}},
                    }
                },
                public=True,
            )
        },
        "/events": {
            "get": Op(
                "every event of the caller's jobs, resumable with Last-Event-ID",
                SSE,
                query=m.EventsQuery,
                parameters=(LAST_EVENT_ID,),
            )
        },
        "/events/ticket": {"post": Op("a stream ticket for EventSource", {"200": m.Ticket})},
        "/jobs/{job_id}/events": {
            "get": Op(
                "one job's events, ending after its last",
                SSE,
                query=m.EventsQuery,
                path=("job_id",),
                parameters=(LAST_EVENT_ID,),
            )
        },
        "/media": {
            "get": Op(
                "the caller's library (ready items unless status is given)",
                {"200": m.MediaList},
                query=m.MediaQuery,
            )
        },
        "/media/upload/init": {
            "post": Op(
                "a presigned upload straight to storage",
                {"200": m.PresignedUpload},
                body=m.UploadInit,
            )
        },
        "/media/upload/complete": {
            "post": Op(
                "create the media item and its processing job",
                {"202": m.Accepted},
                body=m.UploadComplete,
            )
        },
        "/media/restore": {
            "post": Op("undo a delete inside the undo window", {"200": m.MediaItem}, body=m.Restore)
        },
        "/media/search": {
            "get": Op(
                "the caller's ready items by a text query: semantic (CLIP embeddings, HNSW) "
                "when a model and pgvector are there, else full-text; mode says which",
                {"200": m.SearchResults},
                query=m.SearchQuery,
            )
        },
        "/media/{media_id}/similar": {
            "get": Op(
                "the caller's ready items nearest to this item's embedding",
                {"200": m.SearchResults},
                query=m.PageQuery,
                path=("media_id",),
            )
        },
        "/media/{media_id}/duplicates": {
            "get": Op(
                "the caller's ready items that are near-duplicates of this one (perceptual "
                "hash within 8 bits, or the same bytes)",
                {"200": m.DuplicateList},
                query=m.PageQuery,
                path=("media_id",),
            )
        },
        "/media/{media_id}": {
            "get": Op("one item", {"200": m.MediaItem}, path=("media_id",)),
            "patch": Op(
                "change altText, caption, sortOrder, purpose, or the owner's own tags",
                {"200": m.MediaItem},
                body=m.MediaPatch,
                path=("media_id",),
            ),
        },
        "/media/{path}": {
            "delete": Op(
                "hide an item (by id or path) now; purge it after the undo window",
                {"202": m.DeleteAccepted},
                path=("path",),
            )
        },
        "/entities/{entity_type}/{entity_id}/media": {
            "get": Op(
                "the owner's view of a collection: every item, every status (ETag: its version)",
                {"200": m.OwnerCollection},
                parameters=ENTITY,
            ),
            "put": Op(
                "sync a collection to the full ordered list (attach, detach, reorder) at once",
                {"200": m.OwnerCollection},
                body=m.CollectionSync,
                parameters=(*ENTITY, IF_MATCH),
            ),
        },
        "/public/entities/{entity_type}/{entity_id}": {
            "get": Op(
                "a collection as anyone may see it: ready, review-passed items, render-ready",
                {"200": m.PublicCollection, "304": {"description": "not modified"}},
                parameters=(*ENTITY, IF_NONE_MATCH),
                public=True,
            )
        },
        "/jobs": {"get": Op("the caller's jobs", {"200": m.JobList}, query=m.JobQuery)},
        "/jobs/{job_id}": {"get": Op("one job", {"200": m.JobView}, path=("job_id",))},
        "/jobs/{job_id}/cancel": {
            "post": Op("cancel a job", {"202": m.JobCancelled}, path=("job_id",))
        },
        "/jobs/{job_id}/retry": {
            "post": Op("run a failed, retryable job again", {"202": m.JobRetried}, path=("job_id",))
        },
        "/v1/meta/media-rules": {
            "get": Op("the live upload rules", {"200": m.MediaRules}, public=True)
        },
        "/v1/admin/site-policies": {
            "get": Op("the site policy (admin)", SITE_POLICY),
            "put": Op(
                "change the site policy (admin); validated, effective at once",
                SITE_POLICY,
                body=m.SitePolicyUpdate,
            ),
        },
    }
    if development:
        paths["/dev/token"] = {
            "post": Op(
                "a token for a dev user (development only)",
                {"200": m.DevToken},
                body=m.DevTokenRequest,
                body_required=False,
                public=True,
            )
        }
    if page:
        paths["/"] = {
            "get": Op("the media library page", {"200": _text("HTML", "text/html")}, public=True)
        }
        paths["/static/{file}"] = {
            "get": Op(
                "the page's script, styles and the JavaScript client",
                {"200": _text("a file", "*/*")},
                path=("file",),
                public=True,
            )
        }
    if memory_store:
        key = ("key",)
        paths["/storage/{key}"] = {
            "get": Op(
                "an object of the in-memory store (development only)",
                {
                    "200": _text("the bytes", "*/*"),
                    "206": _text("a range", "*/*"),
                    "304": {"description": "not modified"},
                },
                path=key,
                public=True,
            ),
            "head": Op(
                "an object's headers", {"200": {"description": "OK"}}, path=key, public=True
            ),
            "put": Op(
                "a presigned upload into the in-memory store (development only)",
                {"200": {"description": "stored"}},
                path=key,
                public=True,
                parameters=SIGNED_QUERY,
            ),
            "delete": Op(
                "delete an object of the in-memory store, by a signed URL (development only)",
                {"204": {"description": "deleted (also when there was no such object)"}},
                path=key,
                public=True,
                parameters=SIGNED_QUERY,
            ),
        }
    return paths


def component_schemas(
    models: Iterable[tuple[type[BaseModel], JsonSchemaMode]],
) -> tuple[dict[tuple[type[BaseModel], JsonSchemaMode], JsonSchemaValue], dict[str, Any]]:
    """The JSON Schema of each model: a ``$ref`` per ``(model, mode)`` and the schemas they
    point to, for ``components.schemas``."""
    wanted = list(dict.fromkeys(models))
    refs, document = models_json_schema(
        wanted, ref_template=REF_TEMPLATE, schema_generator=_Generator
    )
    return {key: refs[key] for key in wanted}, document.get("$defs", {})


def query_parameters(schema: JsonSchemaValue) -> list[dict[str, Any]]:
    """A query model's schema as OpenAPI parameters, one per field. An empty value is an
    absent one (``read_query``), so an optional parameter also takes ``""``."""
    required = set(schema.get("required", ()))
    parameters = []
    for name, prop in schema["properties"].items():
        about = {"description": prop["description"]} if "description" in prop else {}
        if name not in required and prop != STRING:
            default = {"default": prop["default"]} if "default" in prop else {}
            prop = {"anyOf": [{k: v for k, v in prop.items() if k != "default"}, EMPTY]}
            prop.update(default)
        parameters.append(
            {"name": name, "in": "query", "required": name in required, **about, "schema": prop}
        )
    return parameters


def _response(reply: Reply, description: str, refs: Mapping[Any, JsonSchemaValue]) -> Any:
    if isinstance(reply, dict):
        return reply
    schema = refs[(reply, "serialization")]
    return {"description": description, "content": {JSON_TYPE: {"schema": schema}}}


def _operation(
    op: Op, refs: Mapping[Any, JsonSchemaValue], schemas: Mapping[str, Any]
) -> dict[str, Any]:
    responses = {
        status: _response(reply, "accepted" if status == "202" else "OK", refs)
        for status, reply in op.responses.items()
    }
    responses["default"] = _response(m.ErrorBody, "an error, in the one error shape", refs)
    out: dict[str, Any] = {"summary": op.summary, "responses": responses}
    if not op.public:
        out["security"] = [{"bearer": []}]
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": STRING} for name in op.path
    ]
    if op.query is not None:
        parameters += query_parameters(schemas[op.query.__name__])
    parameters += op.parameters
    if parameters:
        out["parameters"] = parameters
    if op.body is not None:
        out["requestBody"] = {
            "required": op.body_required,
            "content": {JSON_TYPE: {"schema": refs[(op.body, "validation")]}},
        }
    return out


def document(paths: Mapping[str, Mapping[str, Op]]) -> dict[str, Any]:
    """The OpenAPI document of ``paths``, its schemas generated from their models."""
    used: list[tuple[type[BaseModel], JsonSchemaMode]] = [(m.ErrorBody, "serialization")]
    for item in paths.values():
        for op in item.values():
            used += op.models
    refs, schemas = component_schemas(used)
    described = {
        path: {method: _operation(op, refs, schemas) for method, op in item.items()}
        for path, item in paths.items()
    }
    queries = {op.query.__name__ for item in paths.values() for op in item.values() if op.query}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "mediajobs",
            "version": __version__,
            "description": "Every media operation is an asynchronous job. See docs/api.md.",
        },
        "paths": described,
        "components": {
            # Query models become parameters; the schemas they use stay.
            "schemas": {name: s for name, s in schemas.items() if name not in queries},
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
        },
    }


@functools.cache
def _cached(development: bool, memory_store: bool, page: bool) -> dict[str, Any]:
    return spec(development=development, memory_store=memory_store, page=page)


def spec(*, development: bool, memory_store: bool, page: bool = False) -> dict[str, Any]:
    """The document of the app built with these flags."""
    return document(operations(development=development, memory_store=memory_store, page=page))


async def openapi(request: Request) -> Response:
    """``GET /openapi.json``: the document of this app (built once per set of flags)."""
    development, memory_store, page = request.app.state.openapi_flags
    return JSONResponse(_cached(development, memory_store, page))
