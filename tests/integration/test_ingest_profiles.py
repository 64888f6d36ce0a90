"""The site policy's ingest profiles (issue 16) on the real Postgres: the defaults a fresh
database gives, a profile changed through ``PUT /v1/admin/site-policies`` and through
``mediajobs policy set``, what the column keeps, and the values both refuse."""

from __future__ import annotations

import json
from typing import Any

import httpx
import psycopg
import pytest

from mediajobs.cli import main
from mediajobs.db.policies import PolicyInvalid, SitePolicies, UnknownProfile
from mediajobs.db.pool import Pool
from mediajobs.imaging.catalog import CatalogProfile, WatermarkSpec
from mediajobs.service import models as m
from mediajobs.service.auth import Authenticator
from tests.support.sse import SECRET

pytestmark = pytest.mark.timeout(120)

ADMIN = {"Authorization": f"Bearer {Authenticator(SECRET).issue_token('root', roles=['admin'])}"}
POLICY = "/v1/admin/site-policies"
DEFAULTS = CatalogProfile().to_json()


def stored_profiles(database_url: str) -> Any:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT ingest_profiles FROM site_policies WHERE name = 'default'"
        ).fetchone()
    assert row is not None
    return row[0]


def error_of(response: httpx.Response) -> tuple[int, str, str]:
    body = response.json()
    assert set(body) == {"error"}, body
    return response.status_code, body["error"]["code"], body["error"]["message"]


def test_the_api_models_hold_every_field_of_the_profile_and_its_defaults() -> None:
    # The view builds IngestProfile from CatalogProfile.to_json(): a field the model lacked
    # would silently vanish from GET and be refused by PUT.
    assert set(m.api_names(m.IngestProfile).values()) == set(DEFAULTS)
    assert set(m.api_names(m.Watermark).values()) == set(DEFAULTS["watermark"])
    # The defaults are inside the API's ranges, so a GET's profiles can be PUT back.
    parsed = m.IngestProfile.model_validate_json(json.dumps(DEFAULTS))
    assert CatalogProfile.from_json(m.to_json(parsed)) == CatalogProfile()


async def test_a_fresh_policy_has_the_catalog_profile_with_its_defaults(
    pool: Pool, client: httpx.AsyncClient, database_url: str
) -> None:
    policy = await SitePolicies(pool).load()
    assert policy.ingest_profiles == {}
    assert policy.ingest_profile("catalog") == CatalogProfile()
    with pytest.raises(UnknownProfile) as caught:
        policy.ingest_profile("print")
    assert isinstance(caught.value, PolicyInvalid)
    assert caught.value.name == "print"
    assert "no ingest profile 'print'; the site policy has catalog" in str(caught.value)

    shown = await client.get(POLICY, headers=ADMIN)
    assert shown.status_code == 200, shown.text
    assert shown.json()["ingestProfiles"] == {"catalog": DEFAULTS}
    assert stored_profiles(database_url) == {}


async def test_a_patched_profile_changes_the_fields_given_and_keeps_the_other_defaults(
    pool: Pool, client: httpx.AsyncClient, database_url: str
) -> None:
    before = (await client.get(POLICY, headers=ADMIN)).json()
    change = {
        "ingestProfiles": {
            "catalog": {"watermark": {"text": "Acme Stock", "opacity": 0.5}},
            "print": {"prefix": "print", "previewSize": 2400, "previewQuality": 92},
        }
    }
    answer = await client.put(POLICY, json=change, headers=ADMIN)
    assert answer.status_code == 200, answer.text
    view = answer.json()
    catalog = {**DEFAULTS, "watermark": {**DEFAULTS["watermark"], "text": "Acme Stock"}}
    catalog["watermark"]["opacity"] = 0.5
    printed = {**DEFAULTS, "prefix": "print", "previewSize": 2400, "previewQuality": 92}
    assert view["ingestProfiles"] == {"catalog": catalog, "print": printed}
    # Nothing else moved, and the change is who-and-when stamped.
    unchanged = {k: v for k, v in view.items() if k not in ("ingestProfiles", "updatedAt")}
    assert unchanged == {
        **{k: v for k, v in before.items() if k not in ("ingestProfiles", "updatedAt")},
        "updatedBy": "root",
    }
    assert (await client.get(POLICY, headers=ADMIN)).json() == view

    # What a job reads: the stored fields, the rest the defaults.
    policy = await SitePolicies(pool).load()
    assert policy.ingest_profile("catalog") == CatalogProfile(
        watermark=WatermarkSpec(text="Acme Stock", opacity=0.5)
    )
    assert policy.ingest_profile("print") == CatalogProfile(
        prefix="print", preview_size=2400, preview_quality=92
    )
    # The column keeps what differs from the defaults (the watermark whole).
    assert stored_profiles(database_url) == {
        "catalog": {"watermark": catalog["watermark"]},
        "print": {"prefix": "print", "previewSize": 2400, "previewQuality": 92},
    }

    # A GET's profiles PUT back change nothing; an empty set leaves catalog's defaults.
    again = await client.put(POLICY, json={"ingestProfiles": view["ingestProfiles"]}, headers=ADMIN)
    assert again.json()["ingestProfiles"] == view["ingestProfiles"]
    cleared = await client.put(POLICY, json={"ingestProfiles": {}}, headers=ADMIN)
    assert cleared.json()["ingestProfiles"] == {"catalog": DEFAULTS}
    assert stored_profiles(database_url) == {}
    with pytest.raises(UnknownProfile):
        (await SitePolicies(pool).load()).ingest_profile("print")


async def test_profiles_written_into_the_column_are_read_as_overrides(
    pool: Pool, database_url: str
) -> None:
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "UPDATE site_policies SET ingest_profiles = "
            """'{"archive": {"thumbnailSize": 200, "watermark": {"angle": -45}}}'"""
        )
    policy = await SitePolicies(pool).load()
    assert policy.ingest_profile("archive") == CatalogProfile(
        thumbnail_size=200, watermark=WatermarkSpec(angle=-45.0)
    )
    assert policy.ingest_profile("catalog") == CatalogProfile()
    with pytest.raises(UnknownProfile, match="the site policy has archive, catalog"):
        policy.ingest_profile("print")


BAD = [
    ({"Print": {}}, "ingestProfiles: Print (the name): must match ^[a-z][a-z0-9_]{0,31}$"),
    ({"catalog": {"watermark": {"opacity": 0}}}, "catalog.watermark.opacity: must be above 0"),
    ({"catalog": {"watermark": {"opacity": 1.5}}}, "catalog.watermark.opacity: must be at most 1"),
    ({"catalog": {"watermark": {"angle": 91}}}, "catalog.watermark.angle: must be at most 90"),
    ({"catalog": {"watermark": {"size": 0.001}}}, "catalog.watermark.size: must be at least 0.01"),
    ({"catalog": {"watermark": {"text": ""}}}, "catalog.watermark.text: at least 1 character"),
    ({"catalog": {"watermark": {"text": "x" * 101}}}, "catalog.watermark.text: at most 100"),
    ({"catalog": {"watermark": {"text": "   "}}}, "catalog.watermark.text: must not be blank"),
    ({"catalog": {"watermark": {"text": "a\u202eb"}}}, "catalog.watermark.text: must not contain"),
    ({"catalog": {"watermark": {"text": None}}}, "catalog.watermark.text: must not be null"),
    ({"catalog": {"watermark": {"logo": "logo.png"}}}, "catalog.watermark.logo: must match"),
    ({"catalog": {"watermark": {"colour": "red"}}}, "catalog.watermark.colour: is not a known"),
    ({"catalog": {"thumbnailSize": 0}}, "catalog.thumbnailSize: must be at least 16"),
    ({"catalog": {"thumbnailSize": "300"}}, "catalog.thumbnailSize: must be an integer"),
    ({"catalog": {"previewQuality": 101}}, "catalog.previewQuality: must be at most 100"),
    ({"catalog": {"prefix": "a/b"}}, "catalog.prefix: must match"),
    ({"catalog": {"prefix": ".."}}, "catalog.prefix: must match"),
    ({"catalog": {"maxBytes": 10}}, "catalog.maxBytes: must be at least 1024"),
    ({"catalog": {"maxMegapixels": 0}}, "catalog.maxMegapixels: must be at least 0.01"),
    ({"catalog": {"maxMegapixels": 179}}, "catalog.maxMegapixels: must be at most 178.95697"),
    ({"catalog": {"maxBytes": 2**30 + 1}}, f"catalog.maxBytes: must be at most {2**30}"),
    ({"catalog": {"watermarks": {}}}, "catalog.watermarks: is not a known field"),
    ({"catalog": []}, "catalog: must be an object"),
    ([], "ingestProfiles: must be an object"),
    ({f"p{i}": {} for i in range(17)}, "ingestProfiles: at most 16"),
]


@pytest.mark.parametrize(("profiles", "problem"), BAD)
async def test_bad_profiles_are_refused_naming_the_field(
    client: httpx.AsyncClient, profiles: Any, problem: str
) -> None:
    before = (await client.get(POLICY, headers=ADMIN)).json()
    refused = await client.put(POLICY, json={"ingestProfiles": profiles}, headers=ADMIN)
    status, code, message = error_of(refused)
    assert (status, code) == (422, "invalid_field"), message
    assert message.startswith("ingestProfiles: "), message
    assert problem in message, message
    assert (await client.get(POLICY, headers=ADMIN)).json() == before


async def test_the_domain_refuses_what_the_profile_refuses(pool: Pool) -> None:
    # Callers other than the API (code, the CLI after parsing) meet CatalogProfile's checks.
    policies = SitePolicies(pool)
    for profiles, problem in [
        ({"catalog": {"previewSize": 0}}, "catalog.previewSize: "),
        ({"catalog": {"watermark": {"opacity": 2}}}, "catalog.watermark.opacity: "),
        ({"catalog": {"nope": 1}}, "catalog.nope: "),
        ({"Bad Name": {}}, "profile name 'Bad Name'"),
        ({"catalog\n": {}}, "profile name 'catalog\\n'"),
        ({f"p{i}": {} for i in range(17)}, "at most 16 profiles"),
    ]:
        with pytest.raises(PolicyInvalid) as caught:
            await policies.update({"ingest_profiles": profiles})
        assert caught.value.field == "ingest_profiles"
        assert problem in str(caught.value), str(caught.value)
    assert (await policies.load()).ingest_profiles == {}
    done = await policies.update({"ingest_profiles": {"print": CatalogProfile(preview_size=2000)}})
    assert done.ingest_profile("print").preview_size == 2000


def test_policy_set_changes_a_profile_and_refuses_a_bad_one(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    change = '{"catalog": {"watermark": {"text": "Acme", "opacity": 0.6}}}'
    assert main(["policy", "set", f"ingestProfiles={change}"]) == 0
    shown = json.loads(capsys.readouterr().out)
    watermark = {**DEFAULTS["watermark"], "text": "Acme", "opacity": 0.6}
    assert shown["ingestProfiles"] == {"catalog": {**DEFAULTS, "watermark": watermark}}

    bad = '{"catalog": {"watermark": {"angle": 120}}}'
    assert main(["policy", "set", f"ingestProfiles={bad}"]) == 2
    assert capsys.readouterr().err == (
        "mediajobs: policy not changed: ingestProfiles: catalog.watermark.angle: must be at "
        "most 90\n"
    )
    assert main(["policy", "show"]) == 0
    assert json.loads(capsys.readouterr().out)["ingestProfiles"] == shown["ingestProfiles"]
    assert stored_profiles(database_url) == {"catalog": {"watermark": watermark}}


def test_policy_set_help_describes_the_profiles(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["policy", "set", "--help"])
    line = next(x for x in capsys.readouterr().out.splitlines() if "ingestProfiles" in x)
    assert "{NAME: {prefix: text matching" in line
    assert "opacity: number above 0 and at most 1" in line
    assert "(NAME matching ^[a-z][a-z0-9_]{0,31}$, at most 16)" in line
