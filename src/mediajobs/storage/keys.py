"""Object keys. The backend owns every key; user input only ever fills one segment, and
it is checked or sanitized first.

    uploads   media/{userId}/uploads/{uuid}/{sanitized filename}
    variants  media/{userId}/images/{mediaId}/{variant}.webp
    generated media/{userId}/images/{jobId}_{index}.png
              media/{userId}/videos/{jobId}_{index}.mp4
"""

from __future__ import annotations

import re
import unicodedata
import uuid

from mediajobs.errors import InvalidKey

MAX_KEY_BYTES = 1024  # S3's and GCS's limit
MAX_FILENAME_BYTES = 200

_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_UNSAFE_FILENAME_RUN = re.compile(r"[^\w.-]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def validate_key(key: str) -> str:
    """Return ``key`` when it is a safe relative object key, else raise ``InvalidKey``.

    Refused: empty keys, absolute paths, backslashes, control characters (NUL included),
    ``.`` and ``..`` segments, empty segments, and keys over 1024 UTF-8 bytes."""
    if not isinstance(key, str) or not key:
        raise InvalidKey("a key must be a non-empty string")
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise InvalidKey(f"a key must be at most {MAX_KEY_BYTES} bytes")
    if key.startswith("/"):
        raise InvalidKey("a key must be relative")
    if "\\" in key or _CONTROL.search(key):
        raise InvalidKey("a key must not hold backslashes or control characters")
    for segment in key.split("/"):
        if segment in ("", ".", ".."):
            raise InvalidKey(f"a key must not hold {segment or 'empty'!r} segments")
    try:
        key.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidKey("a key must be valid UTF-8") from exc
    return key


def validate_prefix(prefix: str) -> str:
    """A listing prefix: empty, or a key (a trailing slash allowed)."""
    if prefix:
        validate_key(prefix[:-1] if prefix.endswith("/") else prefix)
    return prefix


def check_segment(value: str, what: str = "id") -> str:
    """An id that becomes one key segment: ASCII letters, digits, ``._-``, 1-128 long,
    starting with a letter or digit (so never ``.`` or ``..``)."""
    if not isinstance(value, str) or not _SEGMENT.match(value):
        raise InvalidKey(f"{what} {value!r} cannot be a key segment")
    return value


def sanitize_filename(name: str) -> str:
    """A user's file name made safe as the last key segment. Unicode letters and digits
    survive (NFC-normalized); directories, control characters and other punctuation do
    not; leading dots go (no hidden names, no ``..``); at most 200 UTF-8 bytes, keeping
    the extension."""
    name = unicodedata.normalize("NFC", name or "")
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = _CONTROL.sub("", name)
    name = _UNSAFE_FILENAME_RUN.sub("_", name).strip("._")
    if not name:
        return "file"
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem or len(ext) > 16:
        stem, ext = name, ""
    ext = f".{ext}" if ext else ""
    budget = MAX_FILENAME_BYTES - len(ext.encode())
    encoded = stem.encode("utf-8")[:budget]
    stem = encoded.decode("utf-8", "ignore").rstrip("._") or "file"
    return stem + ext


def upload_key(user_id: str, filename: str, upload_id: uuid.UUID | None = None) -> str:
    user = check_segment(user_id, "user id")
    return f"media/{user}/uploads/{upload_id or uuid.uuid4()}/{sanitize_filename(filename)}"


def variant_key(user_id: str, media_id: uuid.UUID | str, variant: str) -> str:
    user = check_segment(user_id, "user id")
    media = check_segment(str(media_id), "media id")
    return f"media/{user}/images/{media}/{check_segment(variant, 'variant')}.webp"


def generated_key(user_id: str, job_id: uuid.UUID | str, index: int, *, video: bool = False) -> str:
    if index < 0:
        raise InvalidKey("index must be >= 0")
    folder, ext = ("videos", "mp4") if video else ("images", "png")
    job = check_segment(str(job_id), "job id")
    return f"media/{check_segment(user_id, 'user id')}/{folder}/{job}_{index}.{ext}"


def user_prefix(user_id: str, folder: str = "") -> str:
    """``media/{userId}/`` (or a folder under it): what a user may list."""
    prefix = f"media/{check_segment(user_id, 'user id')}/"
    return prefix + (f"{check_segment(folder, 'folder')}/" if folder else "")
