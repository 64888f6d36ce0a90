"""The HTTP boundary, declared once: every request body, query parameter set and response
body of the API as a pydantic model. Validation (``service/body.py``), the OpenAPI document
(``service/openapi.py``) and the ``mediajobs policy`` commands derive from these classes;
nothing else writes a field list, a limit or a JSON Schema.

- ``Body``: a request body. Strict JSON types (``"10"`` is not an integer, ``true`` is not
  a number), unknown fields refused, camelCase names.
- ``Query``: a query parameter set. Values arrive as text and are read as their type;
  unknown parameters are ignored (cache busters), an empty value is an absent one. An
  integer parameter is plain ASCII digits (``QueryInt``): no sign, ``_``, space or ``.0``.
- ``Answer``: a response body, built by the route and dumped with ``to_json``.

A field that may be left out but never sent as ``null`` is ``Omittable[...]``.
Nothing here needs a request or an app: the CLI parses the site policy with it too.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    PlainSerializer,
    Strict,
    WithJsonSchema,
)
from pydantic.alias_generators import to_camel
from pydantic_core import ErrorDetails, PydanticCustomError
from pydantic_core import core_schema as cs

from mediajobs.config import PURPOSE_PATTERN
from mediajobs.db.media import MediaStatus
from mediajobs.db.policies import MAX_INGEST_PROFILES, PROFILE_NAME_PATTERN, SitePolicy
from mediajobs.imaging.catalog import MAX_MEGAPIXELS as MAX_CATALOG_MEGAPIXELS
from mediajobs.imaging.catalog import MAX_SOURCE_BYTES as MAX_CATALOG_BYTES
from mediajobs.imaging.catalog import QUALITY
from mediajobs.imaging.policy import VARIANT_NAME_PATTERN, VARIANT_SIZES
from mediajobs.queue.models import JobState
from mediajobs.types import JSON

T = TypeVar("T")

KIND_PATTERN = r"[a-z][a-z0-9_.]{0,63}"
DEV_USER_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
LISTABLE = tuple(s.value for s in MediaStatus if s is not MediaStatus.DELETED)
ReviewProvider = Literal["disabled", "webhook"]
# Width / height bounds any policy may set: 100:1 is past every panorama a camera makes.
MIN_ASPECT_RATIO = 0.01
MAX_ASPECT_RATIO = 100.0
# The least pixel cap a policy may set: 10,000 pixels, a 100 x 100 image.
MIN_MEGAPIXELS = 0.01


# -- value types ---------------------------------------------------------------------------


def _refuse_null(value: T | None) -> T | None:
    if value is None:
        raise PydanticCustomError("not_null", "must not be null")
    return value


class _NotNullInSchema:
    """Drops the ``null`` branch from an optional field's JSON Schema: absent is fine,
    ``null`` is not."""

    def __get_pydantic_json_schema__(
        self, schema: cs.CoreSchema, handler: GetJsonSchemaHandler
    ) -> dict[str, Any]:
        out: dict[str, Any] = handler(schema)
        branches = [b for b in out.get("anyOf", [out]) if b != {"type": "null"}]
        return branches[0] if len(branches) == 1 else {"anyOf": branches}


# May be left out; never null. Read ``model_fields_set`` to tell "absent" from a value.
Omittable = Annotated[T | None, AfterValidator(_refuse_null), _NotNullInSchema()]

# Control characters other than tab and line breaks, and the bidirectional embeddings,
# overrides and isolates that can make text read other than it is (Unicode TR36 3.1.1).
_UNPRINTABLE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise PydanticCustomError("text_nul", "must not contain NUL characters")
    return value


def _printable(value: str) -> str:
    if _UNPRINTABLE.search(value):
        raise PydanticCustomError(
            "text_unprintable", "must not contain control characters or bidirectional overrides"
        )
    return value


def one_of(values: tuple[str, ...]) -> str:
    """``'a', 'b' or 'c'``: accepted values as the API's messages list them."""
    quoted = [repr(v) for v in values]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]


def _listable(value: Any) -> Any:
    """A listable status's text, or its refusal listing only the listable ones (an unknown
    value and ``deleted`` get the same message)."""
    if isinstance(value, MediaStatus):
        value = value.value
    if value not in LISTABLE:
        raise PydanticCustomError(
            "enum", "must be one of {expected}", {"expected": one_of(LISTABLE)}
        )
    return value


_DIGITS = re.compile(r"[0-9]+")


def _digits(value: Any) -> Any:
    """A query integer's text: plain ASCII digits only (``int()`` would also take ``5_0``,
    ``+5``, `` 5`` and other scripts' digits)."""
    if isinstance(value, str) and not _DIGITS.fullmatch(value):
        raise PydanticCustomError("int_parsing", "must be an integer: digits 0-9 only")
    return value


def _iso(value: datetime) -> str:
    return value.isoformat()


_NO_NUL = AfterValidator(_no_nul)
Filename = Annotated[str, Field(min_length=1, max_length=255), _NO_NUL]
ContentType = Annotated[str, Field(max_length=255), _NO_NUL]
ObjectPath = Annotated[str, Field(min_length=1, max_length=1024), _NO_NUL]
MediaRef = Annotated[str, Field(max_length=64), _NO_NUL]
# Text shown to people: no control characters, no bidirectional tricks.
ALT_TEXT_RULE = (
    "text shown to people: no control characters (tab, line feed and carriage return aside:"
    " U+0000-U+0008, U+000B, U+000C, U+000E-U+001F, U+007F-U+009F) and no bidirectional"
    " embeddings, overrides or isolates (U+202A-U+202E, U+2066-U+2069); 422 invalid_field"
)
AltText = Annotated[
    str,
    Field(max_length=1000, description=ALT_TEXT_RULE),
    AfterValidator(_no_nul),
    AfterValidator(_printable),
]
Purpose = Annotated[str, Field(pattern=f"^{PURPOSE_PATTERN}$")]
Caption = Annotated[
    str,
    Field(max_length=2000, description="a caption, searched by GET /media/search"),
    AfterValidator(_no_nul),
    AfterValidator(_printable),
]
# A tag as people type it; the route normalises it as seed 003 says (lowercase, trimmed,
# stop words dropped) and refuses one that comes out empty (400 invalid_tag).
TagText = Annotated[
    str,
    Field(min_length=1, max_length=100),
    AfterValidator(_no_nul),
    AfterValidator(_printable),
]
SearchText = Annotated[
    str,
    Field(min_length=1, max_length=500, description="what to look for, in words"),
    AfterValidator(_no_nul),
    AfterValidator(_printable),
]
Kind = Annotated[str, Field(pattern=f"^{KIND_PATTERN}$")]
Int32 = Annotated[int, Field(ge=-(2**31), le=2**31 - 1)]
# An integer query parameter: plain digits (none here may be negative).
QueryInt = Annotated[int, BeforeValidator(_digits)]
PageLimit = Annotated[QueryInt, Field(ge=1, le=200)]
ListableStatus = Annotated[
    MediaStatus,
    BeforeValidator(_listable),
    WithJsonSchema({"type": "string", "enum": list(LISTABLE)}),
]
# An instant, written as ``datetime.isoformat()`` writes it (``+00:00``, not ``Z``).
Timestamp = Annotated[
    datetime,
    PlainSerializer(_iso, return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]


# -- bases ---------------------------------------------------------------------------------


class Body(BaseModel):
    """A JSON request body: strict types, unknown fields refused, camelCase names."""

    model_config = ConfigDict(
        extra="forbid", strict=True, alias_generator=to_camel, frozen=True, allow_inf_nan=False
    )


class Query(BaseModel):
    """A query parameter set: text read as the field's type, unknown parameters ignored."""

    model_config = ConfigDict(extra="ignore", alias_generator=to_camel, frozen=True)


class Answer(BaseModel):
    """A response body: built by a route, sent with ``to_json``."""

    model_config = ConfigDict(
        alias_generator=to_camel, frozen=True, validate_by_name=True, validate_by_alias=True
    )


def json_bytes(model: BaseModel) -> bytes:
    """``to_json(model)`` serialised by pydantic's own encoder (no Python dicts in between:
    a fraction of the time for a page of items)."""
    return model.model_dump_json(by_alias=True, exclude_unset=True).encode()


def to_json(model: BaseModel) -> dict[str, JSON]:
    """``model`` as the API writes it: camelCase names; fields never set are left out (an
    item's ``exif`` outside the detail view, a presigned PUT's ``fields``)."""
    return model.model_dump(mode="json", by_alias=True, exclude_unset=True)


# -- validation errors -----------------------------------------------------------------------

_PROBLEMS = {
    "string_type": "must be a string",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "finite_number": "must be a finite number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "list_type": "must be a list",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "dict_type": "must be an object",
    "string_too_long": "at most {max_length} characters",
    "string_too_short": "at least {min_length} character(s)",
    "too_short": "at least {min_length} item(s)",
    "too_long": "at most {max_length} item(s)",
    "string_pattern_mismatch": "must match {pattern}",
    "greater_than_equal": "must be at least {ge}",
    "greater_than": "must be above {gt}",
    "less_than_equal": "must be at most {le}",
    "less_than": "must be below {lt}",
    "literal_error": "must be one of {expected}",
    "enum": "must be one of {expected}",
    "missing": "is required",
    "extra_forbidden": "is not a known field",
}


def describe(error: ErrorDetails) -> tuple[str, str]:
    """``(field, problem)`` of one pydantic error, in the API's words: the top-level field
    (its API name) and what is wrong, with the place inside it when it is nested
    (``variants``, ``[1].size: must be at most 8192``; a refused key of an object is
    ``Bad (the name): ...``)."""
    loc = error["loc"]
    field = str(loc[0]) if loc else "body"
    where = "".join(
        f"[{part}]" if isinstance(part, int) else " (the name)" if part == "[key]" else f".{part}"
        for part in loc[1:]
    )
    template = _PROBLEMS.get(error["type"])
    ctx = {k: _plain(v) for k, v in error.get("ctx", {}).items()}
    problem = template.format(**ctx) if template else error["msg"]
    return field, f"{where.lstrip('.')}: {problem}" if where else problem


def _plain(value: Any) -> Any:
    """A bound as people write it: ``90``, not ``90.0`` (a float field's bounds are floats)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


def unknown_field(error: ErrorDetails) -> bool:
    """True when ``error`` is a top-level field the model does not have."""
    return error["type"] == "extra_forbidden" and len(error["loc"]) == 1


def first_error(errors: list[ErrorDetails]) -> ErrorDetails:
    """The error to report: an unknown field first (the caller's name is wrong), then the
    first in field order."""
    return next((e for e in errors if unknown_field(e)), errors[0])


# -- media -----------------------------------------------------------------------------------


class UploadInit(Body):
    """``POST /media/upload/init``."""

    filename: Filename
    content_type: ContentType | None = None
    size: Annotated[int, Field(ge=1, le=2**53)]


class UploadComplete(Body):
    """``POST /media/upload/complete``."""

    object_path: ObjectPath
    purpose: Omittable[Purpose] = None
    replaces: MediaRef | None = None
    alt_text: AltText | None = None


class TagEdit(Body):
    """The owner's own tags to add and to remove (``user`` tags; at most 100 per item)."""

    add: Annotated[list[TagText], Field(max_length=100)] = []
    remove: Annotated[list[TagText], Field(max_length=100)] = []


class MediaPatch(Body):
    """``PATCH /media/{id}``: any subset; ``altText`` and ``caption`` may be null
    (cleared); ``tags`` adds and removes the owner's own tags."""

    alt_text: AltText | None = None
    caption: Caption | None = None
    sort_order: Omittable[Int32] = None
    purpose: Omittable[Purpose] = None
    tags: Omittable[TagEdit] = None


class Restore(Body):
    """``POST /media/restore``: an item's id or path."""

    path: ObjectPath


class MediaQuery(Query):
    """``GET /media``."""

    prefix: Omittable[str] = Field(
        None,
        description="a folder under the caller's media/{owner}/: with that prefix at most 1024"
        " UTF-8 bytes, no '..' or empty segments, backslashes or control characters"
        " (400 invalid_prefix)",
    )
    status: Omittable[ListableStatus] = None
    purpose: Omittable[Purpose] = None
    tag: Omittable[TagText] = Field(None, description="only items with this tag (any source)")
    cursor: Omittable[str] = None
    limit: PageLimit = 50


class SearchQuery(Query):
    """``GET /media/search``."""

    q: SearchText
    mode: Literal["auto", "semantic", "text"] = Field(
        "auto",
        description="auto: semantic when a model and pgvector are there, else text; "
        "semantic: 409 semantic_search_off when it cannot; text: full-text only",
    )
    cursor: Omittable[str] = None
    limit: Annotated[QueryInt, Field(ge=1, le=100)] = 24


class PageQuery(Query):
    """A page of a result list (``/similar``, ``/duplicates``)."""

    cursor: Omittable[str] = None
    limit: Annotated[QueryInt, Field(ge=1, le=100)] = 24


class VariantRef(Answer):
    """One variant of an item: where it is and its size."""

    url: str
    width: int
    height: int


class FailedJobError(Answer):
    """Why a job failed, and whether running it again can help."""

    code: str
    message: str
    retryable: bool


class FailedJob(Answer):
    """What stopped an item, when a job did; ``POST /jobs/{id}/retry`` runs it again."""

    id: uuid.UUID
    kind: str
    error: FailedJobError


class TagDetail(Answer):
    """A tag and where it came from: ``clip`` (with the model's probability), ``colour``
    (with the share of the image), ``exif`` or ``user``."""

    tag: str
    source: str
    confidence: float | None


class MediaItem(Answer):
    """One item of the library. URLs come from the store; GPS never appears."""

    id: uuid.UUID
    path: str
    status: MediaStatus
    kind: str
    purpose: str
    width: int | None
    height: int | None
    url: str | None
    variants: dict[str, VariantRef]
    blur_data_url: str | None = Field(alias="blurDataURL")
    alt_text: str | None
    sort_order: int
    created_at: Timestamp
    job_id: uuid.UUID | None
    filename: str | None
    content_type: str | None
    detected_type: str | None
    bytes: int | None
    replaces: uuid.UUID | None
    duplicate_of: uuid.UUID | None
    error: dict[str, JSON] | None
    review: dict[str, JSON] | None
    failed_job: FailedJob | None
    caption: str | None = None
    tags: list[str] = []  # distinct tags of every source, alphabetical
    exif: dict[str, JSON] | None = None  # the detail view only; camera data, never GPS
    tag_details: list[TagDetail] | None = None  # the detail view only


class SearchHit(MediaItem):
    """A search result: the item and its ``score`` (semantic: cosine similarity, -1..1;
    text: full-text rank, higher is better)."""

    score: float


class SearchResults(Answer):
    """``GET /media/search`` and ``/media/{id}/similar``: best first. ``mode`` says what
    answered (``semantic`` or ``text``); ``model`` the embedding model of a semantic
    answer; ``reason`` why a search asked for in ``auto`` mode was not semantic."""

    items: list[SearchHit]
    next_cursor: str | None
    mode: Literal["semantic", "text"]
    model: str | None = None
    reason: str | None = None


class DuplicateItem(MediaItem):
    """A near-duplicate: ``bits`` of perceptual hash that differ (0-64), ``identical`` when
    the file's bytes are the same."""

    bits: int
    identical: bool


class DuplicateList(Answer):
    """``GET /media/{id}/duplicates``: nearest first."""

    items: list[DuplicateItem]
    next_cursor: str | None


class MediaList(Answer):
    """A page of the library, newest first; ``nextCursor`` fetches the next."""

    items: list[MediaItem]
    next_cursor: str | None


class PresignedUpload(Answer):
    """Where and how the client sends the bytes, straight to storage."""

    upload_url: str = Field(alias="uploadURL")
    method: Literal["PUT", "POST"]
    headers: dict[str, str]
    fields: Omittable[dict[str, str]] = None  # a presigned POST's form fields
    object_path: str
    expires_at: Timestamp | None


class Accepted(Answer):
    """A completed upload: the item and its processing job."""

    job_id: uuid.UUID | None
    media_id: uuid.UUID


class DeleteAccepted(Answer):
    """A delete: hidden now, purged by ``jobId`` after ``purgeAfter``."""

    job_id: uuid.UUID
    media_id: uuid.UUID
    purge_after: Timestamp | None


# -- collections -----------------------------------------------------------------------------

# The most items any collection may hold (MEDIAJOBS_COLLECTION_MAX_ITEMS is at most this).
COLLECTION_HARD_LIMIT = 500  # 500 items of a sync fit the 64 KiB body limit


class CollectionEntryIn(Body):
    """One item of a sync: the caller's media item and its purpose in the collection (one
    of the media rules' ``collectionPurposes``)."""

    media_id: Annotated[uuid.UUID, Strict(False)]  # the canonical text form, from JSON
    purpose: Purpose


class CollectionSync(Body):
    """``PUT /entities/{type}/{id}/media``: the collection's whole ordered list."""

    items: Annotated[list[CollectionEntryIn], Field(max_length=COLLECTION_HARD_LIMIT)]


class CollectionEntry(Answer):
    """One item of the owner's view: its purpose, its 0-based position and the item."""

    media_id: uuid.UUID
    purpose: str
    position: int
    media: MediaItem


class OwnerCollection(Answer):
    """The owner's view of a collection: every item, in every status, with its review.
    ``version`` is what the ``ETag`` (``"c<version>"``) names."""

    entity_type: str
    entity_id: str
    owner_id: str
    version: int
    items: list[CollectionEntry]


class PublicMedia(Answer):
    """A public item, ready to render: ``src`` (the largest variant, with its ``width`` and
    ``height``), ``thumbnailSrc`` (the smallest), ``srcset`` (every variant as
    ``"url 320w, ..."``), the blur placeholder and the alt text."""

    id: uuid.UUID
    src: str
    thumbnail_src: str
    srcset: str
    blur_data_url: str | None = Field(alias="blurDataURL")
    width: int
    height: int
    alt_text: str | None
    purpose: str


class PublicCollection(Answer):
    """``GET /public/entities/{type}/{id}``: the items anyone may see (ready, past the review
    gate), in order; the profile image (the ``profile`` item) and the cover (the first
    ``cover`` item, else the first ``gallery`` item), or null."""

    entity_type: str
    entity_id: str
    items: list[PublicMedia]
    profile_image: PublicMedia | None
    cover: PublicMedia | None


# -- jobs ------------------------------------------------------------------------------------


class JobQuery(Query):
    """``GET /jobs``."""

    state: Omittable[JobState] = None
    kind: Omittable[Kind] = None
    cursor: Omittable[str] = None
    limit: PageLimit = 50


class JobView(Answer):
    """A job as ``GET /jobs/{id}`` shows it."""

    id: uuid.UUID
    kind: str
    state: JobState
    progress: float
    message: str | None
    result: JSON
    error: dict[str, JSON] | None
    attempt: int
    max_attempts: int
    payload: dict[str, JSON]
    created_at: Timestamp
    updated_at: Timestamp
    started_at: Timestamp | None
    finished_at: Timestamp | None


class JobList(Answer):
    """A page of the caller's jobs, newest first."""

    items: list[JobView]
    next_cursor: str | None


class JobCancelled(Answer):
    """A cancel: the job's state after it."""

    job_id: uuid.UUID
    state: JobState


class JobRetried(Answer):
    """A retry: the new job, and the failed one it runs again."""

    job_id: uuid.UUID
    retry_of: uuid.UUID


# -- site policy -----------------------------------------------------------------------------


class Variant(Body):
    """One output: a WebP whose long edge is at most ``size`` pixels."""

    name: Annotated[str, Field(pattern=VARIANT_NAME_PATTERN)]
    size: Annotated[int, Field(ge=VARIANT_SIZES[0], le=VARIANT_SIZES[1])]


AspectRatio = Annotated[float, Field(ge=MIN_ASPECT_RATIO, le=MAX_ASPECT_RATIO)]
MinSize = Annotated[int, Field(ge=1, le=20000)]
SourceBytes = Annotated[int, Field(ge=1024, le=1 << 30)]
Megapixels = Annotated[float, Field(ge=MIN_MEGAPIXELS, le=1000)]
EdgeSize = Annotated[int, Field(ge=VARIANT_SIZES[0], le=VARIANT_SIZES[1])]
Quality = Annotated[int, Field(ge=QUALITY[0], le=QUALITY[1])]  # libwebp's 0 is unusable
# An ingest profile's limits: the imaging process holds the bytes whole, and Pillow refuses
# more pixels than its bomb limit whatever the profile says (imaging/catalog.py).
CatalogBytes = Annotated[int, Field(ge=1024, le=MAX_CATALOG_BYTES)]
CatalogMegapixels = Annotated[float, Field(ge=MIN_MEGAPIXELS, le=MAX_CATALOG_MEGAPIXELS)]
# One object-key segment (storage/keys.py ``check_segment``): no "/", never "." or "..".
KEY_SEGMENT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
# A store locator (storage/base.py ``Locator``): provider://bucket/key.
LOCATOR_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*://[^/]+/[^/].*$"


def _not_blank(value: str) -> str:
    if not value.strip():
        raise PydanticCustomError("text_blank", "must not be blank")
    return value


class Watermark(Body):
    """The tiled watermark of an ingest profile's preview (``WatermarkSpec``); any subset,
    the rest its defaults."""

    text: Omittable[
        Annotated[
            str,
            Field(min_length=1, max_length=100),
            AfterValidator(_no_nul),
            AfterValidator(_printable),
            AfterValidator(_not_blank),
        ]
    ] = Field(None, description="the text repeated over the preview, 1-100 characters")
    opacity: Omittable[Annotated[float, Field(gt=0, le=1)]] = Field(
        None, description="0 (invisible, excluded) .. 1 (opaque)"
    )
    angle: Omittable[Annotated[float, Field(ge=-90, le=90)]] = Field(
        None, description="rotation of the text, degrees counter-clockwise"
    )
    size: Omittable[Annotated[float, Field(ge=0.01, le=0.5)]] = Field(
        None, description="text height as a fraction of the preview's long edge"
    )
    logo: Annotated[str, Field(max_length=1200, pattern=LOCATOR_PATTERN), _NO_NUL] | None = Field(
        None, description="a store locator of a PNG logo tiled with the text, or null"
    )


class IngestProfile(Body):
    """One ingest profile (``CatalogProfile``, imaging/catalog.py): the derivatives a bulk
    ingest makes. Any subset; a field left out takes its default."""

    prefix: Omittable[Annotated[str, Field(pattern=KEY_SEGMENT_PATTERN)]] = Field(
        None, description="the objects' key prefix, one key segment"
    )
    thumbnail_size: Omittable[EdgeSize] = Field(
        None, description="the WebP thumbnail fits inside this square (aspect kept), pixels"
    )
    thumbnail_quality: Omittable[Quality] = Field(None, description="WebP quality")
    preview_size: Omittable[EdgeSize] = Field(
        None, description="long edge of the watermarked JPEG preview (never upscaled), pixels"
    )
    preview_quality: Omittable[Quality] = Field(None, description="JPEG quality")
    watermark: Omittable[Watermark] = Field(None, description="the preview's tiled watermark")
    max_bytes: Omittable[CatalogBytes] = Field(
        None, description="a larger source file fails file_too_large, bytes"
    )
    max_megapixels: Omittable[CatalogMegapixels] = Field(
        None, description="a larger source image fails too_many_pixels, millions of pixels"
    )


ProfileName = Annotated[str, Field(pattern=PROFILE_NAME_PATTERN)]


class SitePolicyUpdate(Body):
    """The editable site-policy fields, any subset: the body of ``PUT
    /v1/admin/site-policies`` and what ``mediajobs policy set`` parses. The field names are
    the domain record's (``SitePolicy``), the aliases the API's. A change is then checked as
    a whole (``SitePolicy.validate``)."""

    max_batch_size: Omittable[Annotated[int, Field(ge=1, le=1000)]] = Field(
        None, description="uploads in flight per user"
    )
    max_source_bytes: Omittable[SourceBytes] = Field(
        None, description="largest source file, in bytes"
    )
    min_width: Omittable[MinSize] = Field(None, description="smallest upright width")
    min_height: Omittable[MinSize] = Field(None, description="smallest upright height")
    min_aspect_ratio: Omittable[AspectRatio] = Field(None, description="width / height, least")
    max_aspect_ratio: Omittable[AspectRatio] = Field(None, description="width / height, most")
    max_megapixels: Omittable[Megapixels] = Field(
        None, description="pixel cap in millions (0.01 = 10,000 pixels), checked from the header"
    )
    undo_window_seconds: Omittable[Annotated[int, Field(ge=0, le=30 * 86400)]] = Field(
        None, description="how long a delete can be undone"
    )
    photo_review_enabled: Omittable[bool] = Field(
        None, description="hold processed media in review"
    )
    photo_review_provider: Omittable[ReviewProvider] = Field(None, description="who reviews")
    variants: Omittable[Annotated[list[Variant], Field(min_length=1)]] = Field(
        None, description="the WebP outputs"
    )
    webp_quality: Omittable[Quality] = Field(None, description="WebP quality")
    webp_method: Omittable[Annotated[int, Field(ge=0, le=6)]] = Field(
        None, description="WebP effort: 0 fast .. 6 small"
    )
    ingest_profiles: Omittable[
        Annotated[
            dict[ProfileName, IngestProfile],
            # Names are the pattern's only (patternProperties alone would allow others).
            Field(
                max_length=MAX_INGEST_PROFILES, json_schema_extra={"additionalProperties": False}
            ),
        ]
    ] = Field(
        None,
        description="bulk-ingest derivatives by profile name, all of them (catalog always exists)",
    )

    def changes(self) -> dict[str, Any]:
        """The fields given, by their domain names (``min_width``), as plain values (the
        variants as ``{name, size}`` mappings, the ingest profiles as ``{name: {camelCase
        fields given}}``, what ``CatalogProfile.from_json`` reads)."""
        changes = self.model_dump(include=self.model_fields_set - {"ingest_profiles"})
        if self.ingest_profiles is not None:
            changes["ingest_profiles"] = {
                name: to_json(profile) for name, profile in self.ingest_profiles.items()
            }
        return changes


class SitePolicyView(SitePolicyUpdate):
    """The site policy as the admin routes show it: every field, and who changed it when."""

    updated_at: Timestamp | None = None
    updated_by: str | None = None


def policy_fields(policy: SitePolicy) -> dict[str, Any]:
    """The editable fields of a domain ``SitePolicy``, by name, for ``model_construct``:
    not validated again, so a stored policy is shown as it is, even one set in code outside
    the API's ranges."""
    values = {name: getattr(policy, name) for name in SitePolicyUpdate.model_fields}
    values["variants"] = [
        Variant.model_construct(name=v.name, size=v.size) for v in values["variants"]
    ]
    values["ingest_profiles"] = {
        name: _constructed(IngestProfile, profile.to_json())
        for name, profile in policy.all_ingest_profiles().items()
    }
    return values


def _constructed(model: type[BaseModel], value: Mapping[str, Any]) -> Any:
    """``model`` holding the camelCase ``value`` (an object field as its own model), not
    validated: every key of ``value`` set, so ``to_json`` shows it (a key the model lacks
    is left out: ``test_schema`` keeps the models and ``CatalogProfile`` in step)."""
    names = {field.alias or name: name for name, field in model.model_fields.items()}
    fields = {}
    for key, item in value.items():
        name = names.get(key)
        if name is None:
            continue
        if name == "watermark":
            item = _constructed(Watermark, item)
        fields[name] = item
    return model.model_construct(**fields)


class MediaRules(Answer):
    """The live upload rules, so clients never hard-code them."""

    max_batch_size: int
    max_source_bytes: int
    min_width: int
    min_height: int
    min_aspect_ratio: float
    max_aspect_ratio: float
    max_megapixels: float
    undo_window_seconds: int
    accepted_types: list[str]
    accepted_extensions: list[str]
    variants: list[Variant]
    review_enabled: bool
    collection_purposes: list[str]
    collection_max_items: int


class DevTokenRequest(Body):
    """``POST /dev/token`` (development only); the body may be empty."""

    user: Omittable[Annotated[str, Field(pattern=f"^{DEV_USER_PATTERN}$")]] = None


class DevToken(Answer):
    """A token for a dev user, and how many seconds it is valid."""

    token: str
    user: str
    expires_in: int


# -- the rest --------------------------------------------------------------------------------


class Ticket(Answer):
    """A short-lived stream ticket for ``EventSource``: ``GET /events?ticket=...``."""

    ticket: str
    expires_at: Timestamp


class EventsQuery(Query):
    """``GET /events`` and ``GET /jobs/{id}/events``: a ticket instead of a bearer header,
    and where to resume (as the ``Last-Event-ID`` header)."""

    ticket: Omittable[str] = None
    last_event_id: Omittable[str] = None


class Health(Answer):
    """Liveness."""

    status: str


class Understanding(Answer):
    """What image understanding can do in this process (never a readiness failure: it is
    optional). ``semantic``: text and similar search by embeddings; ``reason`` why not."""

    semantic: bool
    model: str | None
    pgvector: str | None
    index: dict[str, JSON] | None
    reason: str | None


class Ready(Answer):
    """Readiness, with each dependency's check, and what image understanding can do."""

    status: str
    checks: dict[str, str]
    understanding: Understanding | None = None


class ErrorDetail(Body):
    """A stable machine-readable ``code`` and a message for people."""

    code: str
    message: str


class ErrorBody(Body):
    """The one error shape: ``{"error": {"code", "message"}}``."""

    error: ErrorDetail


def api_names(model: type[BaseModel]) -> Mapping[str, str]:
    """Field name -> API name (alias) of ``model``."""
    return {name: field.alias or name for name, field in model.model_fields.items()}
