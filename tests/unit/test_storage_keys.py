"""Backend-owned keys: user input fills one segment, checked or sanitized first."""

from __future__ import annotations

import uuid

import pytest

from mediajobs.errors import InvalidKey
from mediajobs.storage.base import Locator
from mediajobs.storage.keys import (
    generated_key,
    sanitize_filename,
    upload_key,
    user_prefix,
    validate_key,
    variant_key,
)

UPLOAD = uuid.UUID("0191d6a1-0000-7000-8000-000000000001")


def test_keys_follow_the_documented_layout():
    assert upload_key("u1", "IMG 001.JPG", UPLOAD) == f"media/u1/uploads/{UPLOAD}/IMG_001.JPG"
    assert variant_key("u1", "m-9", "thumb") == "media/u1/images/m-9/thumb.webp"
    assert generated_key("u1", "j7", 2) == "media/u1/images/j7_2.png"
    assert generated_key("u1", "j7", 0, video=True) == "media/u1/videos/j7_0.mp4"
    assert user_prefix("u1") == "media/u1/"
    assert user_prefix("u1", "images") == "media/u1/images/"


@pytest.mark.parametrize("user_id", ["..", ".", "a/b", "a\\b", "", "a\x00", "../u2", "ü", " u"])
def test_user_ids_cannot_inject_path_segments(user_id):
    with pytest.raises(InvalidKey):
        upload_key(user_id, "x.jpg")
    with pytest.raises(InvalidKey):
        user_prefix(user_id)


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\me\\photo.jpg", "photo.jpg"),
        (".hidden", "hidden"),
        ("..", "file"),
        ("", "file"),
        ("a\x00b.png", "ab.png"),
        ("fotografía del año.heic", "fotografía_del_año.heic"),
        ("日本の夏.jpg", "日本の夏.jpg"),
        ("e\u0301te\u0301.png", "\u00e9t\u00e9.png"),  # NFC
        ("what?*<>|.jpeg", "what.jpeg"),
    ],
)
def test_filenames_are_sanitized_and_unicode_survives(given, kept):
    assert sanitize_filename(given) == kept
    validate_key(f"media/u1/uploads/x/{sanitize_filename(given)}")


def test_long_filenames_keep_their_extension_within_the_byte_budget():
    name = sanitize_filename("日" * 300 + ".jpeg")
    assert name.endswith(".jpeg")
    assert len(name.encode()) <= 200


@pytest.mark.parametrize(
    "key", ["", "/abs", "a/../b", "../a", "a/./b", "a//b", "a\\b", "a\x00b", "a\nb", "x" * 1025]
)
def test_invalid_keys_are_refused(key):
    with pytest.raises(InvalidKey):
        validate_key(key)


def test_locators_print_and_parse_back():
    locator = Locator("lightsail", "old-bucket", "media/u1/images/m/thumb.webp")
    assert str(locator) == "lightsail://old-bucket/media/u1/images/m/thumb.webp"
    assert Locator.parse(str(locator)) == locator
    with pytest.raises(InvalidKey):
        Locator.parse("not a locator")
