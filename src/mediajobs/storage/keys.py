"""Object keys. The backend owns every key; user input only ever fills one segment, and
it is derived, checked or sanitized first.

    uploads   media/{owner}/uploads/{uuid}/{sanitized filename}
    variants  media/{owner}/images/{mediaId}/{variant}.webp
    generated media/{owner}/images/{jobId}_{index}.png
              media/{owner}/videos/{jobId}_{index}.mp4
    ingested  {prefix}/original/{yyyy}/{mm}/{mediaId}.{ext}   (private: the source, byte for byte)
              {prefix}/thumbnail/{mediaId}.webp
              {prefix}/watermarked/{mediaId}.jpg

``{owner}`` is ``owner_segment(sub)``: the identity provider's ``sub`` itself when it is a
plain key segment, else an escaped or hashed form of it (see ``owner_segment``).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
import uuid
from dataclasses import dataclass
from datetime import datetime

from mediajobs.errors import InvalidKey

MAX_KEY_BYTES = 1024  # S3's and GCS's limit
MAX_FILENAME_BYTES = 200
MAX_DISPLAY_NAME_CHARS = 255  # what upload/init accepts as a file name
MAX_OWNER_SEGMENT = 128
FALLBACK_STEM = "file"

_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_UNSAFE_FILENAME_RUN = re.compile(r"[^\w.-]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Removed from display names: C0/C1 controls, lone surrogates, and the bidirectional
# embeddings, overrides and isolates that can make "gpj.exe" read as "exe.jpg"
# (Unicode TR36 3.1.1). Joiners (U+200D) stay: emoji sequences need them.
_DISPLAY_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff\u202a-\u202e\u2066-\u2069]")
_EXTENSION = re.compile(r"\w{1,16}")
# Bytes an owner's sub keeps as they are in its escaped segment; every other byte of its
# UTF-8 becomes "~" and two upper-case hex digits.
_OWNER_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")
_ALNUM = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
_HASHED_OWNER = "~h"


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
    if not isinstance(value, str) or not _SEGMENT.fullmatch(value):
        raise InvalidKey(f"{what} {value!r} cannot be a key segment")
    return value


def owner_segment(sub: str) -> str:
    """The key segment of an owner, from the identity provider's ``sub`` (which stays the
    owner id everywhere else). Stable: a pure function of ``sub``, so a user's keys never
    move. Three disjoint forms:

    * **plain**: ``sub`` itself when it is already a key segment (``check_segment``: ASCII
      letters, digits and ``._-``, 1-128 long, starting with a letter or digit), so the
      segments of existing users are unchanged (``alice``, ``u1``, ``5f7c8ec7``).
    * **escaped**: otherwise, each UTF-8 byte of ``sub`` outside ``A-Za-z0-9._-`` (and a
      first byte that is not a letter or digit) becomes ``~`` plus two upper-case hex digits:
      ``auth0|5f7c8ec7`` -> ``auth0~7C5f7c8ec7``, ``ann@example.com`` ->
      ``ann~40example.com``, ``../x`` -> ``~2E.~2Fx``, when that is at most 128 characters.
    * **hashed**: else ``~h`` and the 64 hex digits of SHA-256 of the UTF-8 of ``sub``
      (66 characters): a 150-character ``sub``, or a long non-ASCII one.

    Why two different subs never share a segment: a plain segment has no ``~`` and the
    other two forms always do (a ``sub`` whose escaping has no ``~`` is made of safe bytes
    and starts with a letter or digit: plain up to 128 characters, hashed beyond), so no
    plain segment equals another form. Escaping is
    injective: UTF-8 is, and the byte code is prefix-free (a kept byte is one character
    that is never ``~``; an escaped byte is ``~`` and exactly two hex digits), so the
    escaped string decodes back to exactly one ``sub``. An escaped segment never has ``~``
    followed by ``h``, which is not a hex digit, so it never equals a hashed one. Hashed
    segments of different subs collide only if SHA-256 does: no collision has ever been
    found, and among 10^12 owners the chance of one is below 10^-50 (the birthday bound,
    n^2 / 2^257). Two subs that differ only in case, or in characters another escaper
    would merge (``a|b``, ``a_b``, ``a~7Cb``), get different segments. Segments contain
    only ``A-Za-z0-9._-~`` (unreserved in URLs, RFC 3986 2.3), are never ``.`` or ``..``,
    and are at most 128 characters.

    Raises ``InvalidKey`` for an empty ``sub``, or one that is not a string."""
    if not isinstance(sub, str) or not sub:
        raise InvalidKey("an owner id must be a non-empty string")
    if _SEGMENT.fullmatch(sub):
        return sub
    raw = sub.encode("utf-8", "surrogatepass")
    escaped = "".join(
        chr(byte) if byte in _OWNER_SAFE and (index > 0 or byte in _ALNUM) else f"~{byte:02X}"
        for index, byte in enumerate(raw)
    )
    if len(escaped) <= MAX_OWNER_SEGMENT:
        return escaped
    return _HASHED_OWNER + hashlib.sha256(raw).hexdigest()


def _split_extension(name: str) -> tuple[str, str]:
    """``("IMG_0001", "HEIC")`` for ``IMG_0001.HEIC``; the extension is what follows the
    last dot when it is 1-16 word characters (``.jpg`` alone is a nameless JPEG)."""
    stem, dot, ext = name.rpartition(".")
    if dot and _EXTENSION.fullmatch(ext):
        return stem, ext
    return name, ""


def _basename(name: str) -> str:
    """The last path component: browsers send bare names, old ones whole Windows paths."""
    return name.replace("\\", "/").rsplit("/", 1)[-1]


def sanitize_filename(name: str) -> str:
    """A user's file name made safe as the last key segment: ``stem.ext``, never an empty
    stem and never without the extension the name had.

    Unicode letters and digits survive (NFC-normalized); directories, control characters
    and other punctuation do not (runs become ``_``, then dots and underscores are trimmed
    from the stem's ends, so no hidden names and no ``..``). A stem left empty becomes
    ``file``: ``🌅.jpg`` -> ``file.jpg``, ``.jpg`` -> ``file.jpg``, ``...`` -> ``file``.
    At most 200 UTF-8 bytes, cut at a character boundary of the stem so the extension
    (1-16 word characters after the last dot) is kept. What the key cannot hold, the
    display name keeps (``display_filename``)."""
    name = unicodedata.normalize("NFC", name or "")
    name = _basename(name)
    name = _CONTROL.sub("", name)
    stem, ext = _split_extension(name)
    ext = _UNSAFE_FILENAME_RUN.sub("", ext)
    ext = f".{ext}" if ext else ""
    stem = _UNSAFE_FILENAME_RUN.sub("_", stem).strip("._")
    budget = MAX_FILENAME_BYTES - len(ext.encode("utf-8"))
    stem = stem.encode("utf-8", "ignore")[:budget].decode("utf-8", "ignore").rstrip("._")
    return (stem or FALLBACK_STEM) + ext


def display_filename(name: str) -> str:
    """The name an item shows (the API's ``filename``): what the user called the file, with
    its original characters (emoji, dashes, spaces, punctuation), NFC-normalized, without
    directories, control characters, lone surrogates or bidirectional overrides, trimmed of
    surrounding spaces and at most 255 characters (the extension kept). When nothing is
    left, the sanitized key name (``file`` for an empty name)."""
    name = unicodedata.normalize("NFC", _DISPLAY_UNSAFE.sub("", name or ""))
    name = _basename(name).strip()
    if len(name) > MAX_DISPLAY_NAME_CHARS:
        stem, ext = _split_extension(name)
        ext = f".{ext}" if ext else ""
        name = stem[: MAX_DISPLAY_NAME_CHARS - len(ext)].rstrip() + ext
    return name or sanitize_filename(name)


def upload_key(owner_id: str, filename: str, upload_id: uuid.UUID | None = None) -> str:
    """``media/{owner}/uploads/{uuid}/{sanitized filename}``; raises ``InvalidKey``."""
    owner = owner_segment(owner_id)
    return f"media/{owner}/uploads/{upload_id or uuid.uuid4()}/{sanitize_filename(filename)}"


def variant_key(owner_id: str, media_id: uuid.UUID | str, variant: str) -> str:
    """``media/{owner}/images/{mediaId}/{variant}.webp``; raises ``InvalidKey``."""
    media = check_segment(str(media_id), "media id")
    return (
        f"media/{owner_segment(owner_id)}/images/{media}/{check_segment(variant, 'variant')}.webp"
    )


def user_prefix(owner_id: str, folder: str = "") -> str:
    """``media/{owner}/`` (or a folder under it): what a user may list, and what every key
    of theirs starts with."""
    prefix = f"media/{owner_segment(owner_id)}/"
    return prefix + (f"{check_segment(folder, 'folder')}/" if folder else "")


@dataclass(frozen=True, slots=True)
class CatalogKeys:
    """Where one ingested image's objects live (seed 003, step 4)."""

    original: str
    thumbnail: str
    watermarked: str


def catalog_keys(
    prefix: str, media_id: uuid.UUID | str, extension: str, taken: datetime
) -> CatalogKeys:
    """The keys of an ingested image: ``{prefix}/original/{yyyy}/{mm}/{mediaId}.{ext}``,
    ``{prefix}/thumbnail/{mediaId}.webp`` and ``{prefix}/watermarked/{mediaId}.jpg``
    (seed 003's layout). ``taken``: when the photo was taken (EXIF), else the file's mtime;
    ``extension``: the source file's, lower-cased, without the dot (``jpg``, ``tif``).
    Raises ``InvalidKey`` for a prefix or extension that cannot be a key segment."""
    root = check_segment(prefix, "key prefix")
    media = check_segment(str(media_id), "media id")
    ext = check_segment(extension.lower().lstrip("."), "extension")
    return CatalogKeys(
        original=f"{root}/original/{taken.year:04d}/{taken.month:02d}/{media}.{ext}",
        thumbnail=f"{root}/thumbnail/{media}.webp",
        watermarked=f"{root}/watermarked/{media}.jpg",
    )
