"""One schema source: the models of ``service/models.py`` are what validation, the OpenAPI
document and the ``mediajobs policy`` commands read, so a field added to a model shows up
in all of them, and the limits the document states are the limits the server enforces."""

from __future__ import annotations

import dataclasses
import json
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

import pytest
from pydantic import Field
from starlette.requests import Request

from mediajobs.cli import main
from mediajobs.db.policies import PolicyInvalid, SitePolicy
from mediajobs.imaging.policy import ImagePolicy
from mediajobs.service import models as m
from mediajobs.service.body import parse_body, read_query
from mediajobs.service.errors import ApiError
from mediajobs.service.openapi import Op, component_schemas, document, spec
from mediajobs.service.policy import policy_json
from mediajobs.service.policy_text import fields_help, parse_assignments


def refused(raw: bytes | str, model: type[m.Body]) -> tuple[int, str, str]:
    data = raw.encode() if isinstance(raw, str) else raw
    with pytest.raises(ApiError) as caught:
        parse_body(data, model)
    return caught.value.status, caught.value.code, str(caught.value)


def query(model: type[m.Query], text: str) -> Any:
    request = Request({"type": "http", "query_string": text.encode(), "headers": []})
    return read_query(request, model)


# -- validation -------------------------------------------------------------------------------


def test_bodies_are_refused_with_the_codes_of_the_error_shape() -> None:
    ok = {"filename": "a.jpg", "contentType": "image/jpeg", "size": 10}
    assert refused("{not json", m.UploadInit)[:2] == (400, "malformed_json")
    assert refused("[1, 2]", m.UploadInit)[:2] == (400, "malformed_json")
    assert refused('{"filename": "\\ud800", "size": 1}', m.UploadInit)[:2] == (400, "invalid_text")
    assert refused(json.dumps({**ok, "admin": True}), m.UploadInit) == (
        400,
        "unknown_field",
        "unknown field 'admin'",
    )
    assert refused('{"filename": "a.jpg"}', m.UploadInit) == (
        422,
        "missing_field",
        "size is required",
    )
    for size in ("10", True, 1.5):
        assert refused(json.dumps({**ok, "size": size}), m.UploadInit) == (
            422,
            "invalid_field",
            "size: must be an integer",
        )
    # An unknown field is named before a wrong value: the caller's name is what is wrong.
    assert refused(json.dumps({"size": "x", "nope": 1}), m.UploadInit)[1] == "unknown_field"


def test_an_empty_filename_and_a_size_past_2_53_are_refused_as_the_document_says() -> None:
    assert refused('{"filename": "", "size": 1}', m.UploadInit) == (
        422,
        "invalid_field",
        "filename: at least 1 character(s)",
    )
    assert refused(json.dumps({"filename": "a", "size": 2**53 + 1}), m.UploadInit) == (
        422,
        "invalid_field",
        f"size: must be at most {2**53}",
    )
    assert parse_body(json.dumps({"filename": "a", "size": 2**53}).encode(), m.UploadInit).size
    init = spec(development=False, memory_store=False)["components"]["schemas"]["UploadInit"]
    assert init["properties"]["filename"] == {"type": "string", "minLength": 1, "maxLength": 255}
    assert init["properties"]["size"] == {"type": "integer", "minimum": 1, "maximum": 2**53}
    assert init["additionalProperties"] is False


def test_text_fields_refuse_nul_and_text_shown_to_people_refuses_control_characters() -> None:
    nul = refused('{"objectPath": "a\\u0000b"}', m.UploadComplete)
    assert nul == (422, "invalid_field", "objectPath: must not contain NUL characters")
    for unprintable in ("a\u202eb", "a\x07b", "a\x85b"):
        status, code, message = refused(json.dumps({"altText": unprintable}), m.MediaPatch)
        assert (status, code, message.split(":")[0]) == (422, "invalid_field", "altText")
    lines = parse_body(b'{"altText": "two\\nlines\\tand a tab"}', m.MediaPatch)
    assert lines.alt_text == "two\nlines\tand a tab"


def test_an_omittable_field_may_be_left_out_but_not_sent_as_null() -> None:
    patch = parse_body(b'{"altText": null}', m.MediaPatch)
    assert (patch.model_fields_set, patch.alt_text) == ({"alt_text"}, None)  # clears it
    assert refused('{"purpose": null}', m.MediaPatch) == (
        422,
        "invalid_field",
        "purpose: must not be null",
    )
    assert refused('{"purpose": "Not Valid"}', m.MediaPatch)[2] == (
        "purpose: must match ^[a-z][a-z0-9_]{0,31}$"
    )
    schema = spec(development=False, memory_store=False)["components"]["schemas"]["MediaPatch"]
    assert schema["properties"]["purpose"] == {
        "type": "string",
        "pattern": "^[a-z][a-z0-9_]{0,31}$",
    }
    assert {"type": "null"} in schema["properties"]["altText"]["anyOf"]


def test_query_parameters_are_read_as_their_types_and_refused_as_invalid_query() -> None:
    assert query(m.MediaQuery, "").limit == 50
    page = query(m.MediaQuery, "limit=7&status=failed&purpose=&unknown=1")
    assert (page.limit, page.status, page.purpose) == (7, "failed", None)
    assert query(m.JobQuery, "state=queued&kind=media.process").kind == "media.process"
    for model, text, problem in [
        (m.MediaQuery, "limit=abc", "limit: must be an integer"),
        (m.MediaQuery, "limit=100000", "limit: must be at most 200"),
        (m.MediaQuery, "limit=0", "limit: must be at least 1"),
        (m.MediaQuery, "status=deleted", "status: must be one of"),
        (m.MediaQuery, "status=bogus", "status: must be one of"),
        (m.JobQuery, "state=nope", "state: must be one of"),
        (m.JobQuery, "kind=Bad", "kind: must match"),
    ]:
        with pytest.raises(ApiError) as caught:
            query(model, text)
        assert (caught.value.status, caught.value.code) == (400, "invalid_query"), text
        assert str(caught.value).startswith(problem), (text, str(caught.value))


# -- responses ------------------------------------------------------------------------------


def test_responses_keep_the_api_names_and_timestamps_as_isoformat_writes_them() -> None:
    at = datetime(2026, 12, 3, 7, 0, tzinfo=UTC)
    accepted = m.DeleteAccepted(job_id=uuid.UUID(int=1), media_id=uuid.UUID(int=2), purge_after=at)
    assert m.to_json(accepted) == {
        "jobId": str(uuid.UUID(int=1)),
        "mediaId": str(uuid.UUID(int=2)),
        "purgeAfter": "2026-12-03T07:00:00+00:00",
    }
    presigned = m.PresignedUpload.model_validate(
        {"uploadURL": "u", "method": "PUT", "headers": {}, "objectPath": "k", "expiresAt": None}
    )
    assert "fields" not in m.to_json(presigned)  # left out when never set, not null


# -- one source -----------------------------------------------------------------------------


class Extended(m.SitePolicyUpdate):
    """The policy model with one more field, as a later issue would add it."""

    thumbnail_count: m.Omittable[Annotated[int, Field(ge=1, le=9)]] = Field(
        None, description="thumbnails per item"
    )


def test_a_field_added_to_a_model_appears_in_validation_the_document_and_the_cli() -> None:
    # Validation: the API name, its range, and the old model still refuses it.
    assert parse_body(b'{"thumbnailCount": 3}', Extended).changes() == {"thumbnail_count": 3}
    assert refused('{"thumbnailCount": 10}', Extended) == (
        422,
        "invalid_field",
        "thumbnailCount: must be at most 9",
    )
    assert refused('{"thumbnailCount": 3}', m.SitePolicyUpdate)[1] == "unknown_field"

    # The document: the field, typed and bounded, in the body's schema.
    paths = {"/policy": {"put": Op("change it", {"200": Extended}, body=Extended)}}
    generated = document(paths)
    schema = generated["components"]["schemas"]["Extended"]
    assert schema["properties"]["thumbnailCount"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": 9,
        "description": "thumbnails per item",
    }
    body = generated["paths"]["/policy"]["put"]["requestBody"]["content"]["application/json"]
    assert body["schema"] == {"$ref": "#/components/schemas/Extended"}

    # The CLI: settable by its API name, refused out of range, listed with type and range.
    assert parse_assignments(["thumbnailCount=4"], Extended) == {"thumbnail_count": 4}
    with pytest.raises(PolicyInvalid) as caught:
        parse_assignments(["thumbnailCount=0"], Extended)
    assert caught.value.field == "thumbnailCount"
    with pytest.raises(PolicyInvalid):
        parse_assignments(["thumbnailCount=4"])  # not a field of the real model
    assert "  thumbnailCount       integer 1..9: thumbnails per item" in fields_help(Extended)


def test_the_served_document_is_the_models_schema() -> None:
    served = spec(development=True, memory_store=True, page=True)["components"]["schemas"]
    _, generated = component_schemas([(m.SitePolicyUpdate, "validation")])
    assert served["SitePolicyUpdate"] == generated["SitePolicyUpdate"]
    assert set(served["SitePolicyUpdate"]["properties"]) == set(
        m.api_names(m.SitePolicyUpdate).values()
    )
    assert served["MediaItem"]["properties"]["blurDataURL"] == {
        "anyOf": [{"type": "string"}, {"type": "null"}]
    }
    assert spec(development=False, memory_store=False)["openapi"].startswith("3.1")


def test_policy_set_help_lists_every_field_with_its_type_and_range(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["policy", "set", "--help"])
    assert exited.value.code == 0
    shown = capsys.readouterr().out
    for alias in m.api_names(m.SitePolicyUpdate).values():
        assert f"\n  {alias} " in shown, alias
    assert "maxBatchSize         integer 1..1000" in shown
    assert "photoReviewProvider  one of disabled, webhook" in shown
    assert "maxMegapixels        number 0.01..1000" in shown


def test_policy_set_takes_the_api_names_only() -> None:
    assert parse_assignments(["minWidth=150"]) == {"min_width": 150}
    assert parse_assignments(["minWidth=150", "photoReviewEnabled=true"]) == {
        "min_width": 150,
        "photo_review_enabled": True,
    }
    with pytest.raises(PolicyInvalid, match=r"min_width: is not a policy field .* minWidth"):
        parse_assignments(["min_width=150"])
    variants = parse_assignments(['variants=[{"name": "small", "size": 400}]'])
    assert variants == {"variants": [{"name": "small", "size": 400}]}
    for bad, field in [
        ("maxBatchSize=abc", "maxBatchSize"),
        ("maxBatchSize=0", "maxBatchSize"),
        ("webpQuality=0", "webpQuality"),
        ("maxAspectRatio=1e308", "maxAspectRatio"),
        ("minAspectRatio=NaN", "minAspectRatio"),
        ('variants=[{"name": "thumb", "size": 100.7}]', "variants"),
        ('variants=[{"name": "Bad Name", "size": 100}]', "variants"),
        ("variants=[]", "variants"),
        ("photoReviewProvider=gemini", "photoReviewProvider"),
        ("no_such_field=1", "no_such_field"),
    ]:
        with pytest.raises(PolicyInvalid) as caught:
            parse_assignments([bad])
        assert caught.value.field == field, (bad, str(caught.value))


def test_policy_show_uses_the_api_names() -> None:
    shown = policy_json(SitePolicy())
    assert set(shown) == set(m.api_names(m.SitePolicyUpdate).values())
    assert (shown["minWidth"], shown["photoReviewProvider"]) == (200, "disabled")
    # A policy set in code outside the API's ranges is shown as stored, not refused.
    assert (
        policy_json(dataclasses.replace(SitePolicy(), max_source_bytes=10))["maxSourceBytes"] == 10
    )


def test_the_image_policy_of_the_default_site_policy_is_the_default_image_policy() -> None:
    # One home for each default: the site policy takes imaging's numbers, not copies.
    assert SitePolicy().image_policy() == ImagePolicy()
