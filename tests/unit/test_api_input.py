"""Input the API and ``mediajobs policy set`` read: strict JSON (no ``NaN``, no key given
twice, an over-long integer named by its field), strict query integers, and a site policy
under which some image can pass."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from starlette.requests import Request

from mediajobs.cli import main
from mediajobs.db.policies import PolicyInvalid, SitePolicy
from mediajobs.service import models as m
from mediajobs.service.body import MAX_INT_DIGITS, parse_body, read_query
from mediajobs.service.errors import UNAVAILABLE, ApiError
from mediajobs.service.openapi import spec
from mediajobs.service.policy_text import parse_assignments

LONG = "9" * 5000


def refused(raw: str, model: type[m.Body]) -> tuple[int, str, str]:
    with pytest.raises(ApiError) as caught:
        parse_body(raw.encode(), model)
    return caught.value.status, caught.value.code, str(caught.value)


def policy_refusal(*items: str) -> tuple[str, str]:
    with pytest.raises(PolicyInvalid) as caught:
        parse_assignments(list(items))
    return caught.value.field, str(caught.value)


# -- bodies ----------------------------------------------------------------------------------


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_not_json(constant: str) -> None:
    status, code, message = refused(f'{{"filename": "a", "size": {constant}}}', m.UploadInit)
    assert (status, code) == (400, "malformed_json")
    assert constant in message


def test_a_key_given_twice_is_not_json_here() -> None:
    status, code, message = refused('{"filename": "a", "size": 1, "size": 2}', m.UploadInit)
    assert (status, code) == (400, "malformed_json")
    assert "duplicate key 'size'" in message
    nested = '{"webpQuality": 80, "variants": [{"name": "a", "name": "b", "size": 320}]}'
    assert refused(nested, m.SitePolicyUpdate)[:2] == (400, "malformed_json")


def test_an_integer_too_long_to_read_is_named_by_its_field() -> None:
    assert refused(f'{{"filename": "a", "size": {LONG}}}', m.UploadInit) == (
        422,
        "invalid_field",
        f"size: must be at most {2**53}",
    )
    assert refused(f'{{"filename": "a", "size": -{LONG}}}', m.UploadInit) == (
        422,
        "invalid_field",
        "size: must be at least 1",
    )
    assert refused(f'{{"filename": {LONG}, "size": 1}}', m.UploadInit)[2] == (
        "filename: must be a string"
    )
    # Just under the limit is an ordinary (out of range) integer.
    edge = "9" * MAX_INT_DIGITS
    assert refused(f'{{"filename": "a", "size": {edge}}}', m.UploadInit)[1] == "invalid_field"


# -- policy set ------------------------------------------------------------------------------


def test_policy_set_names_the_field_of_an_over_long_number(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert policy_refusal(f"webpQuality={LONG}") == (
        "webpQuality",
        "webpQuality: must be at most 100",
    )
    assert main(["policy", "set", f"webpQuality={LONG}"]) == 2
    err = capsys.readouterr().err
    assert "policy not changed: webpQuality: must be at most 100" in err
    assert "Traceback" not in err


def test_policy_set_says_when_json_looking_text_is_not_json() -> None:
    field, message = policy_refusal('variants=[{"name":"thumb","size":320}')
    assert field == "variants"
    assert "is not valid JSON" in message
    field, message = policy_refusal('variants=[{"name":"a","name":"b","size":320}]')
    assert (field, "duplicate key 'name'" in message) == ("variants", True)
    # Text that does not look like JSON is still text, refused by the model's type.
    assert policy_refusal("photoReviewProvider=gemini")[0] == "photoReviewProvider"


def test_policy_set_refuses_a_field_given_twice() -> None:
    assert policy_refusal("maxBatchSize=5", "maxBatchSize=6") == (
        "maxBatchSize",
        "maxBatchSize: is given more than once",
    )
    assert parse_assignments(["maxBatchSize=5", "webpQuality=70"]) == {
        "max_batch_size": 5,
        "webp_quality": 70,
    }


def test_policy_set_of_nan_is_refused_naming_the_field() -> None:
    assert policy_refusal("maxMegapixels=NaN")[0] == "maxMegapixels"


# -- query parameters ------------------------------------------------------------------------


def query_refusal(model: type[m.Query], text: str) -> str:
    request = Request({"type": "http", "query_string": text.encode(), "headers": []})
    with pytest.raises(ApiError) as caught:
        read_query(request, model)
    assert (caught.value.status, caught.value.code) == (400, "invalid_query"), text
    return str(caught.value)


def test_a_deleted_status_and_an_unknown_one_get_the_same_clean_list() -> None:
    listed = (
        "status: must be one of 'pending', 'processing', 'ready', 'in_review', 'rejected'"
        " or 'failed'"
    )
    assert query_refusal(m.MediaQuery, "status=bogus") == listed
    assert query_refusal(m.MediaQuery, "status=deleted") == listed
    request = Request({"type": "http", "query_string": b"status=in_review", "headers": []})
    assert read_query(request, m.MediaQuery).status == "in_review"


@pytest.mark.parametrize("text", ["5_0", "+5", "%205", "5%20", "5.0", "-1", "%EF%BC%95", "0x10"])
def test_an_integer_query_parameter_is_plain_ascii_digits(text: str) -> None:
    assert query_refusal(m.MediaQuery, f"limit={text}").startswith("limit: must be an integer")
    assert query_refusal(m.JobQuery, f"limit={text}").startswith("limit: must be an integer")


def test_plain_digits_are_read_as_the_integer() -> None:
    for model in (m.MediaQuery, m.JobQuery):
        request = Request({"type": "http", "query_string": b"limit=007", "headers": []})
        assert read_query(request, model).limit == 7


# -- the site policy as a whole --------------------------------------------------------------


def no_image_passes(**changes: object) -> str:
    with pytest.raises(PolicyInvalid) as caught:
        dataclasses.replace(SitePolicy(), **changes).validate()  # type: ignore[arg-type]
    assert caught.value.field == "policy"
    return str(caught.value)


def test_minimum_sides_that_need_more_pixels_than_the_cap_are_refused() -> None:
    message = no_image_passes(min_width=20000, min_height=20000, max_megapixels=1)
    assert "400000000 pixels" in message and "no image could pass" in message
    assert "no image could pass" in no_image_passes(max_megapixels=1e-300)
    # Exactly the cap is one image that passes.
    SitePolicy(min_width=1000, min_height=1000, max_megapixels=1).validate()


def test_minimum_sides_the_aspect_range_pushes_past_the_cap_are_refused() -> None:
    # 4000 x 200 fits 2 MP as pixels, but at most 4:1 it must be 4000 x 1000 (4 MP).
    message = no_image_passes(min_width=4000, min_height=200, max_aspect_ratio=4, max_megapixels=2)
    assert "aspect-ratio range" in message
    no_image_passes(min_width=200, min_height=4000, min_aspect_ratio=0.25, max_megapixels=2)
    # At 20:1 a 4000 x 200 image exists and passes.
    SitePolicy(min_width=4000, min_height=200, max_aspect_ratio=20, max_megapixels=2).validate()
    assert SitePolicy(min_width=4000, min_height=200, max_aspect_ratio=4).least_pixels() == 4e6


def test_the_default_and_the_clis_policies_stay_valid() -> None:
    SitePolicy().validate()
    SitePolicy(max_megapixels=40, min_width=150).validate()
    SitePolicy(max_megapixels=m.MIN_MEGAPIXELS, min_width=100, min_height=100).validate()


def test_the_megapixel_cap_has_a_documented_floor() -> None:
    assert policy_refusal("maxMegapixels=1e-300") == (
        "maxMegapixels",
        f"maxMegapixels: must be at least {m.MIN_MEGAPIXELS}",
    )
    assert parse_assignments([f"maxMegapixels={m.MIN_MEGAPIXELS}"]) == {
        "max_megapixels": m.MIN_MEGAPIXELS
    }
    schema = m.SitePolicyUpdate.model_json_schema()["properties"]["maxMegapixels"]
    assert schema["minimum"] == m.MIN_MEGAPIXELS


# -- the document says what the server enforces ----------------------------------------------


def test_the_document_states_the_rules_the_schema_alone_does_not() -> None:
    document = spec(development=True, memory_store=True)
    paths, schemas = document["paths"], document["components"]["schemas"]
    for path in ("/events", "/jobs/{job_id}/events"):
        headers = [p for p in paths[path]["get"]["parameters"] if p["in"] == "header"]
        assert [p["name"] for p in headers] == ["Last-Event-ID"], path
    for method in ("put", "delete"):
        signed = {p["name"] for p in paths["/storage/{key}"][method]["parameters"]}
        assert signed >= {"ct", "max", "exp", "sig"}, method
    assert "204" in paths["/storage/{key}"]["delete"]["responses"]
    alt = schemas["MediaPatch"]["properties"]["altText"]["anyOf"][0]
    assert "bidirectional" in alt["description"] and "control characters" in alt["description"]
    prefix = next(p for p in paths["/media"]["get"]["parameters"] if p["name"] == "prefix")
    assert "1024" in prefix["description"]
    assert schemas["UploadComplete"]["properties"]["objectPath"]["minLength"] == 1


def test_an_empty_object_path_is_an_invalid_field() -> None:
    assert refused('{"objectPath": ""}', m.UploadComplete) == (
        422,
        "invalid_field",
        "objectPath: at least 1 character(s)",
    )
    assert refused('{"path": ""}', m.Restore)[:2] == (422, "invalid_field")


# -- docs/api.md -----------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]
RAISED = re.compile(
    r"(?:ApiError|AuthError|_HTTPError|error_response|_error_body|raw_error)\(\s*"
    r"(?:#[^\n]*\n\s*)?(?:\d+,\s*)?\"([a-z_]+)\"",
)


def test_the_error_table_names_every_code_the_server_answers() -> None:
    sources = [*(ROOT / "src/mediajobs/service").glob("*.py")]
    sources.append(ROOT / "src/mediajobs/storage/memory_app.py")
    codes = {code for path in sources for code in RAISED.findall(path.read_text())}
    codes |= {code for _, code, _ in UNAVAILABLE}
    codes |= {"not_found", "method_not_allowed"}  # Starlette's own, named by http_error
    assert {"invalid_ticket", "signature_missing", "too_many_uploads"} <= codes  # the scan works
    documented = set(re.findall(r"`([a-z_]+)`", (ROOT / "docs/api.md").read_text()))
    assert sorted(codes - documented - {"http_error"}) == []
