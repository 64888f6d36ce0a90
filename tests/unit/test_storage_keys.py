"""Backend-owned keys: user input fills one segment, checked or sanitized first."""

from __future__ import annotations

import hashlib
import itertools
import uuid
from datetime import datetime

import pytest

from mediajobs.errors import InvalidKey
from mediajobs.storage.base import Locator
from mediajobs.storage.keys import (
    catalog_keys,
    check_segment,
    display_filename,
    owner_segment,
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
    assert user_prefix("u1") == "media/u1/"
    assert user_prefix("u1", "images") == "media/u1/images/"
    keys = catalog_keys("catalog", UPLOAD, "JPEG", datetime(2019, 3, 7, 12, 0))
    assert keys.original == f"catalog/original/2019/03/{UPLOAD}.jpeg"
    assert keys.thumbnail == f"catalog/thumbnail/{UPLOAD}.webp"
    assert keys.watermarked == f"catalog/watermarked/{UPLOAD}.jpg"


@pytest.mark.parametrize(
    ("prefix", "extension"), [("..", "jpg"), ("a/b", "jpg"), ("c", "j/pg"), ("c", "")]
)
def test_catalog_keys_refuse_what_cannot_be_a_segment(prefix, extension):
    with pytest.raises(InvalidKey):
        catalog_keys(prefix, UPLOAD, extension, datetime(2020, 1, 1))


@pytest.mark.parametrize("user_id", ["..", ".", "a/b", "a\\b", "a\x00", "../u2", "ü", " u", "a\n"])
def test_user_ids_never_inject_path_segments(user_id):
    prefix = user_prefix(user_id)
    key = upload_key(user_id, "x.jpg", UPLOAD)
    assert key.startswith(prefix) and prefix.count("/") == 2
    segment = prefix.split("/")[1]
    assert segment not in (".", "..") and "/" not in segment and "\\" not in segment
    assert validate_key(key) == key


def test_an_empty_owner_id_has_no_segment():
    with pytest.raises(InvalidKey):
        user_prefix("")


IDP_SUBS = [
    "auth0|5f7c8ec7",
    "google-oauth2|1234",
    "ann.lee+photos@example.com",
    "x" * 150,
    "y" * 128,
    "y" * 129,
    "ü" * 255,
    "日本のユーザー",
    "../../etc/passwd",
    "a/..",
    "a\\b",
    "-leading-dash",
    "_under",
    ".",
    "..",
    "~h" + "0" * 64,
    "a~7Cb",
    "a|b",
    "a_b",
    "a b",
    "a%7Cb",
    "Alice",
    "alice",
    "ALICE",
    "alice\n",
    "CN=Ann,O=Example",
    "https://idp.example/users/42",
    "S-1-5-21-3623811015-3361044348-30300820-1013",
    "00uabcd1234EFGH5678",
    "🙂",
]


@pytest.mark.parametrize("sub", IDP_SUBS)
def test_every_sub_has_a_safe_owner_segment(sub):
    segment = owner_segment(sub)
    assert segment == owner_segment(sub)  # stable
    assert 1 <= len(segment) <= 128
    assert segment not in (".", "..")
    assert all(ch.isascii() and (ch.isalnum() or ch in "._-~") for ch in segment), segment
    key = variant_key(sub, UPLOAD, "thumb")
    assert validate_key(key) == key
    assert key.startswith(user_prefix(sub))
    assert len(upload_key(sub, "n" * 300 + ".jpeg", UPLOAD).encode()) <= 1024


def test_owner_segments_of_different_subs_never_collide():
    subs = set(IDP_SUBS) | {s.upper() for s in IDP_SUBS} | {s + "|" for s in IDP_SUBS}
    subs |= {f"user{i}@example.com" for i in range(200)} | {"z" * n for n in range(1, 256)}
    segments = {owner_segment(sub) for sub in subs}
    assert len(segments) == len(subs)
    # No user's prefix is another's: "media/a/" vs "media/a~7Cb/" differ before the slash.
    prefixes = sorted(user_prefix(sub) for sub in subs)
    assert all(not b.startswith(a) for a, b in itertools.pairwise(prefixes))


@pytest.mark.parametrize(
    ("sub", "segment"),
    [
        ("alice", "alice"),  # a sub that was a key segment before keeps it
        ("Alice", "Alice"),
        ("user.name_1-x", "user.name_1-x"),
        ("auth0|5f7c8ec7", "auth0~7C5f7c8ec7"),
        ("google-oauth2|1234", "google-oauth2~7C1234"),
        ("ann@example.com", "ann~40example.com"),
        ("ü", "~C3~BC"),
        ("../x", "~2E.~2Fx"),
        ("a~7Cb", "a~7E7Cb"),
        ("x" * 150, "~h" + hashlib.sha256(b"x" * 150).hexdigest()),
        ("ü" * 43, "~h" + hashlib.sha256("ü".encode() * 43).hexdigest()),  # 258 escaped
        ("ü" * 21, "~C3~BC" * 21),  # 126 escaped: still readable
    ],
)
def test_owner_segments_are_plain_escaped_or_hashed(sub, segment):
    assert owner_segment(sub) == segment


def test_an_escaped_owner_segment_decodes_back_to_its_sub():
    for sub in IDP_SUBS:
        segment = owner_segment(sub)
        if "~" not in segment or segment.startswith("~h"):
            continue
        raw, i = bytearray(), 0
        while i < len(segment):
            if segment[i] == "~":
                raw.append(int(segment[i + 1 : i + 3], 16))
                i += 3
            else:
                raw.append(ord(segment[i]))
                i += 1
        assert raw.decode() == sub


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\me\\photo.jpg", "photo.jpg"),
        (".hidden", "file.hidden"),
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
    assert name == "日" * 65 + ".jpeg"  # 195 bytes of stem + 5 of extension


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("🌅.jpg", "file.jpg"),
        ("—.png", "file.png"),
        (".jpg", "file.jpg"),
        ("🙂.HEIC", "file.HEIC"),
        ("🌅🌄 🏖.webp", "file.webp"),
        ("_.jpg", "file.jpg"),
        ("..jpg", "file.jpg"),
        ("...", "file"),
        ("___", "file"),
        ("._._.", "file"),
        ("_", "file"),
        ("🌅", "file"),
        ("—", "file"),
        ("photo.🌅", "photo"),
        ("a.b.c.png", "a.b.c.png"),
        ("ünïcödé—name.avif", "ünïcödé_name.avif"),
        ("x.jpg\u202e", "x.jpg"),
        ("IMG_0001.HEIC", "IMG_0001.HEIC"),
        ("C:\\fakepath\\🌅.jpg", "file.jpg"),
        ("." * 300 + "jpg", "file.jpg"),
        ("_" * 300 + ".png", "file.png"),
        ("🌅" * 100 + ".jpg", "file.jpg"),
        ("a" * 300, "a" * 200),
        ("a" * 300 + ".jpeg", "a" * 195 + ".jpeg"),
        ("é" * 150 + ".png", "é" * 98 + ".png"),
    ],
)
def test_every_sanitized_name_keeps_a_stem_and_its_extension(given, kept):
    name = sanitize_filename(given)
    assert name == kept
    stem = name.rpartition(".")[0] or name
    assert stem and not stem.startswith((".", "_"))
    assert len(name.encode()) <= 200
    validate_key(f"media/u1/uploads/x/{name}")


@pytest.mark.parametrize(
    ("given", "shown"),
    [
        ("🌅.jpg", "🌅.jpg"),
        ("—.png", "—.png"),
        (".jpg", ".jpg"),
        ("🙂.HEIC", "🙂.HEIC"),
        ("👨\u200d👩\u200d👧 at the beach?.jpg", "👨\u200d👩\u200d👧 at the beach?.jpg"),
        ("e\u0301te\u0301 <2024>.png", "\u00e9t\u00e9 <2024>.png"),
        ("  spaced.jpg  ", "spaced.jpg"),
        ("C:\\Users\\me\\photo 1.jpg", "photo 1.jpg"),
        ("a\x00b\x1f\x7f\x85c.jpg", "abc.jpg"),
        ("lone\ud800surrogate.png", "lonesurrogate.png"),
        ("invoice\u202egpj.exe", "invoicegpj.exe"),
        ("", "file"),
        ("\x00", "file"),
        ("dir/", "file"),
        ("日" * 300 + ".jpeg", "日" * 250 + ".jpeg"),
    ],
)
def test_display_names_keep_the_original_characters_within_bounds(given, shown):
    assert display_filename(given) == shown
    assert len(display_filename(given)) <= 255
    display_filename(given).encode("utf-8")  # storable text: no lone surrogates


def test_check_segment_refuses_a_trailing_newline():
    with pytest.raises(InvalidKey):
        check_segment("u1\n")


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
