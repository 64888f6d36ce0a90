"""The rules of collections that need no database (issue 15): If-Match and If-None-Match
matching, the derived profile image and cover, the purposes setting, service-token scopes
and the ``collection_updated`` event."""

from __future__ import annotations

import json
import uuid
from types import SimpleNamespace

import jwt
import pytest

from mediajobs.cli import main
from mediajobs.config import Settings
from mediajobs.db.collections import Attachment
from mediajobs.errors import AuthError, ConfigError
from mediajobs.realtime.events import COLLECTION_UPDATED, Event, collection_event
from mediajobs.service.auth import Authenticator
from mediajobs.service.collections import (
    _none_match,
    derived_images,
    if_match_versions,
    owner_etag,
    public_item,
)
from mediajobs.service.errors import ApiError
from mediajobs.service.models import PublicMedia
from mediajobs.storage import StoreRegistry
from mediajobs.storage.s3 import S3Store

SECRET = "unit-secret-" + "k" * 40


def test_if_match_names_versions_by_their_strong_tags_only() -> None:
    assert owner_etag(7) == '"c7"'
    assert if_match_versions('"c7"') == {7}
    assert if_match_versions(' "c7" , "c9"') == {7, 9}
    assert if_match_versions("*") is None  # any current version
    assert if_match_versions('W/"c7"') == set()  # weak: never matches a write
    assert if_match_versions('"7"') == set()  # not ours
    assert if_match_versions('"c"') == set()
    assert if_match_versions('"c07"') == set()  # an ETag matches only as written
    assert if_match_versions('"c99999999999999999999"') == set()  # past a bigint: not ours
    assert if_match_versions("") == set()


def test_if_none_match_compares_weakly() -> None:
    assert _none_match('"abc"', '"abc"')
    assert _none_match('W/"abc"', '"abc"')
    assert _none_match('"x", "abc"', '"abc"')
    assert _none_match("*", '"abc"')
    assert not _none_match('"abd"', '"abc"')
    assert not _none_match(None, '"abc"')


def shown(purpose: str, n: int) -> PublicMedia:
    return PublicMedia.model_validate(
        {
            "id": uuid.UUID(int=n),
            "src": f"https://cdn/{n}.webp",
            "thumbnailSrc": f"https://cdn/{n}-t.webp",
            "srcset": f"https://cdn/{n}-t.webp 320w, https://cdn/{n}.webp 1024w",
            "blurDataURL": None,
            "width": 1024,
            "height": 768,
            "altText": None,
            "purpose": purpose,
        }
    )


def test_the_profile_is_the_profile_item_and_the_cover_prefers_a_cover_item() -> None:
    gallery, cover, profile = shown("gallery", 1), shown("cover", 2), shown("profile", 3)
    assert derived_images([gallery, cover, profile]) == (profile, cover)
    assert derived_images([profile, gallery]) == (profile, gallery)  # no cover: first gallery
    assert derived_images([profile]) == (profile, None)  # a profile is never the cover
    assert derived_images([]) == (None, None)


def test_the_purposes_are_configurable_words() -> None:
    assert Settings.from_env({}).collection_purposes == ("profile", "gallery", "cover")
    mine = Settings.from_env({"MEDIAJOBS_COLLECTION_PURPOSES": "profile, clip,track"})
    assert mine.collection_purposes == ("profile", "clip", "track")
    for bad in ("Profile", "a b", "x,x", ",", "a-b"):
        with pytest.raises(ConfigError) as raised:
            Settings.from_env({"MEDIAJOBS_COLLECTION_PURPOSES": bad})
        assert raised.value.variable == "MEDIAJOBS_COLLECTION_PURPOSES"
    with pytest.raises(ConfigError):
        Settings.from_env({"MEDIAJOBS_COLLECTION_MAX_ITEMS": "501"})


def test_a_service_token_with_the_scope_manages_any_collection() -> None:
    auth = Authenticator(SECRET)
    service = auth.bearer(f"Bearer {auth.issue_token('catalog', scopes=['collections:manage'])}")
    assert service.manages_collections and not service.is_admin
    admin = auth.bearer(f"Bearer {auth.issue_token('root', roles=['admin'])}")
    assert admin.manages_collections
    user = auth.bearer(f"Bearer {auth.issue_token('alice', scopes=['media:read'])}")
    assert not user.manages_collections and user.scopes == {"media:read"}
    exp = {"sub": "svc", "exp": 2**40}
    scp = jwt.encode({**exp, "scp": ["collections:manage"]}, SECRET, algorithm="HS256")
    assert auth.bearer(f"Bearer {scp}").manages_collections  # the list form of some IdPs
    for claim in ({"scope": ["collections:manage"]}, {"scp": "collections:manage"}):
        token = jwt.encode({**exp, **claim}, SECRET, algorithm="HS256")
        with pytest.raises(AuthError) as caught:
            auth.bearer(f"Bearer {token}")
        assert caught.value.code == "invalid_token"


def test_mediajobs_token_grants_scopes(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MEDIAJOBS_JWT_SECRET", SECRET)
    assert main(["token", "svc", "--scope", "collections:manage", "--scope", "x:y"]) == 0
    token = capsys.readouterr().out.strip()
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert claims["scope"] == "collections:manage x:y"


def test_collection_updated_names_the_entity_and_why() -> None:
    media, job = uuid.uuid4(), uuid.uuid4()
    event = collection_event("ada", "artist", "ada", 3, "review", media_id=media, job_id=job)
    assert (event.owner_id, event.job_id, event.type) == ("ada", None, COLLECTION_UPDATED)
    assert json.loads(event.data) == {
        "entityType": "artist",
        "entityId": "ada",
        "version": 3,
        "reason": "review",
        "mediaId": str(media),
        "jobId": str(job),
    }
    synced = collection_event("ada", "artist", "ada", 4, "sync")
    assert synced.job_id is None and set(json.loads(synced.data)) == {
        "entityType",
        "entityId",
        "version",
        "reason",
    }
    with pytest.raises(ValueError, match="unknown collection change reason"):
        collection_event("ada", "artist", "ada", 4, "because")
    # An event without a job travels through Redis and back as it is.
    recorded = Event(9, synced.owner_id, None, synced.type, synced.data)
    assert Event.from_message(recorded.to_message(), None) == recorded
    assert b"event: collection_updated" in recorded.frame


def test_public_reads_use_permanent_urls_only() -> None:
    """A private bucket's signed URLs expire while CDNs keep the body, and name the bucket
    and the signing key: the public read refuses them (503), never renders them."""
    private = S3Store(client=None, bucket="private-bucket")  # no request is made
    public = S3Store(client=None, bucket="public", public_base_url="https://cdn.example/m/")
    locator = {"locator": "s3://private-bucket/media/a/v/thumb.webp", "width": 320, "height": 240}
    record = SimpleNamespace(
        id=uuid.UUID(int=1), variants={"thumb": locator}, blur_data_url=None, alt_text=None
    )
    attachment = Attachment(uuid.UUID(int=1), "gallery", 0)
    svc = SimpleNamespace(stores=StoreRegistry(public, [private]))
    with pytest.raises(ApiError) as refused:
        public_item(svc, attachment, record)  # type: ignore[arg-type]
    assert (refused.value.status, refused.value.code) == (503, "public_urls_not_configured")
    record.variants = {
        "thumb": {**locator, "locator": "s3://public/media/a/v/thumb.webp"},
        "card": {"locator": "s3://public/media/a/v/card.webp", "width": 640, "height": 480},
    }
    shown = public_item(svc, attachment, record)  # type: ignore[arg-type]
    assert shown.src == "https://cdn.example/m/media/a/v/card.webp"
    base = "https://cdn.example/m/media/a/v"
    assert shown.srcset == f"{base}/thumb.webp 320w, {base}/card.webp 640w"
