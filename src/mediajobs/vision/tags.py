"""Tags: zero-shot CLIP tags over a vocabulary, tags that need no model (dominant colours,
orientation, camera and year), and the normalisation every tag goes through.

Seed 003 normalises tags: lowercase, trimmed, stop words removed, duplicates removed. Each
tag has a ``source``: ``clip`` (zero-shot, with the model's confidence), ``colour`` (a
dominant colour, with the share of the image it covers), ``exif`` (orientation, camera make
and model, year taken) and ``user`` (added by the owner).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from mediajobs.vision.model import ClipModel, ModelInvalid

MAX_TAG_LENGTH = 100  # the media_tags CHECK
# English function words that carry no meaning in a tag ("the beach" -> "beach"): the
# articles, common prepositions, conjunctions and pronouns of the stop-word lists that
# search engines ship (PostgreSQL's english.stop is a superset).
STOP_WORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "of",
        "in",
        "on",
        "at",
        "to",
        "for",
        "from",
        "by",
        "with",
        "without",
        "into",
        "onto",
        "over",
        "under",
        "near",
        "and",
        "or",
        "but",
        "nor",
        "so",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "being",
        "this",
        "that",
        "these",
        "those",
        "it",
        "its",
        "my",
        "your",
        "our",
        "their",
        "his",
        "her",
        "some",
        "any",
    ]
)
# The prompt each vocabulary concept is asked as (CLIP's ImageNet template, Radford et al.
# 2021, section 3.1.4: "A photo of a {label}." beats the bare label by 1.3 points).
PROMPT = "a photo of {}."
# CLIP's logit scale: the learned temperature, clamped at 100 during training (Radford et
# al. 2021, section 2.5); softmax(100 * cosine) gives its zero-shot probabilities.
LOGIT_SCALE = 100.0
DEFAULT_TOP_K = 5
DEFAULT_THRESHOLD = 0.05  # probability over the vocabulary (softmax), per tag
# Dominant colours: a colour becomes a tag when it covers this share of the image.
COLOUR_MIN_SHARE = 0.15
COLOUR_MAX_TAGS = 3
SQUARE_TOLERANCE = 0.02  # sides within 2% of each other make a square
_WHITESPACE = re.compile(r"\s+")


class TagSource(StrEnum):
    CLIP = "clip"  # zero-shot CLIP over the vocabulary; confidence is its probability
    COLOUR = "colour"  # a dominant colour; confidence is the share of pixels
    EXIF = "exif"  # orientation, camera make and model, year taken
    USER = "user"  # added by the owner (PATCH /media/{id})


@dataclass(frozen=True)
class Tag:
    """One tag of an item: the normalised text, where it came from, and a confidence in
    [0, 1] (None for facts such as a camera make)."""

    tag: str
    source: TagSource
    confidence: float | None = None


def normalise_tag(text: str) -> str | None:
    """Seed 003's normalisation: NFKC, lowercase, whitespace trimmed and collapsed, stop
    words dropped. None when nothing is left or it is over ``MAX_TAG_LENGTH`` characters."""
    words = _WHITESPACE.split(unicodedata.normalize("NFKC", text).lower().strip())
    kept = " ".join(w for w in words if w and w not in STOP_WORDS)
    if not kept or len(kept) > MAX_TAG_LENGTH or not kept.isprintable():
        return None
    return kept


def normalise_tags(texts: Iterable[str]) -> list[str]:
    """``normalise_tag`` of each, without the empty ones and without repeats, in order."""
    seen: dict[str, None] = {}
    for text in texts:
        tag = normalise_tag(text)
        if tag is not None:
            seen.setdefault(tag)
    return list(seen)


def load_vocabulary(path: Path | None = None) -> list[str]:
    """The concepts of a vocabulary file (one per line, ``#`` comments), normalised and
    deduplicated; the default list that ships with mediajobs when ``path`` is None.
    Raises ``ModelInvalid`` when the file cannot be read or holds no concept."""
    try:
        if path is None:
            text = resources.files("mediajobs.vision").joinpath("vocabulary.txt").read_text()
        else:
            text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelInvalid("vocabulary_invalid", f"the tag vocabulary {path}: {exc}") from None
    lines = (line.split("#", 1)[0] for line in text.splitlines())
    concepts = normalise_tags(lines)
    if not concepts:
        raise ModelInvalid("vocabulary_invalid", f"the tag vocabulary {path} holds no concept")
    return concepts


class ZeroShotTagger:
    """Zero-shot tags from image embeddings: each vocabulary concept is embedded once as
    ``PROMPT``; an image's tags are the ``top_k`` concepts whose probability (softmax of
    ``LOGIT_SCALE`` x cosine over the whole vocabulary) is at least ``threshold``."""

    def __init__(
        self,
        model: ClipModel,
        vocabulary: Sequence[str],
        *,
        top_k: int = DEFAULT_TOP_K,
        threshold: float = DEFAULT_THRESHOLD,
    ) -> None:
        self.vocabulary = list(vocabulary)
        self.top_k = top_k
        self.threshold = threshold
        self._concepts = model.encode_texts([PROMPT.format(c) for c in self.vocabulary])

    def tag(self, embeddings: npt.NDArray[np.float32]) -> list[list[Tag]]:
        """Unit image embeddings [N, d] -> N lists of ``clip`` tags, most probable first."""
        if len(embeddings) == 0:
            return []
        logits = LOGIT_SCALE * (embeddings @ self._concepts.T)
        logits -= logits.max(axis=1, keepdims=True)
        probabilities = np.exp(logits)
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        out: list[list[Tag]] = []
        for row in probabilities:
            best = np.argsort(-row)[: self.top_k]
            out.append(
                [
                    Tag(self.vocabulary[i], TagSource.CLIP, round(float(row[i]), 4))
                    for i in best
                    if row[i] >= self.threshold
                ]
            )
        return out


# The colour names, by code (_colour_codes answers codes: small integers count faster than
# strings).
COLOUR_NAMES = (
    "black",
    "blue",
    "brown",
    "green",
    "grey",
    "orange",
    "pink",
    "purple",
    "red",
    "white",
    "yellow",
)  # alphabetical: a tie in share lists the names in this order
_CODE = {name: code for code, name in enumerate(COLOUR_NAMES)}
# Hue sectors in degrees (upper bounds) and their colours; 345-360 is red again.
_HUE_BOUNDS = np.array([15, 40, 70, 165, 260, 320, 345], dtype=np.float32)
_HUE_CODES = np.array(
    [_CODE[n] for n in ("red", "orange", "yellow", "green", "blue", "purple", "pink", "red")],
    dtype=np.uint8,
)


def _colour_codes(rgb: npt.NDArray[np.float32]) -> npt.NDArray[np.uint8]:
    """A basic colour per pixel ([N, 3] in [0, 1]) as a code into ``COLOUR_NAMES``, by hue,
    saturation and value (the HSV hexcone, Smith 1978): achromatic pixels are black, grey
    or white; chromatic ones fall in hue sectors; dark oranges are brown and pale reds
    pink."""
    high, low = rgb.max(axis=1), rgb.min(axis=1)
    chroma = high - low
    saturation = np.where(high > 0, chroma / np.maximum(high, 1e-6), 0.0)
    r, g, b = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    safe = np.maximum(chroma, 1e-6)
    hue = (
        np.select(
            [high == r, high == g],
            [((g - b) / safe) % 6, (b - r) / safe + 2],
            (r - g) / safe + 4,
        )
        * 60.0
    )
    codes: npt.NDArray[np.uint8] = _HUE_CODES[np.searchsorted(_HUE_BOUNDS, hue, side="right")]
    codes[(hue >= 10) & (hue < 45) & (high < 0.6)] = _CODE["brown"]
    reddish = (hue < 15) | (hue >= 345)
    codes[reddish & (saturation < 0.5) & (high > 0.7)] = _CODE["pink"]
    achromatic = (saturation < 0.18) | (high < 0.18)
    value = high[achromatic]
    codes[achromatic] = np.where(
        value < 0.18, _CODE["black"], np.where(value > 0.85, _CODE["white"], _CODE["grey"])
    )
    return codes


def colour_tags(image: Image.Image) -> list[Tag]:
    """Up to ``COLOUR_MAX_TAGS`` colour names that each cover at least
    ``COLOUR_MIN_SHARE`` of ``image`` (measured on a 64 x 64 copy; an RGB image that small
    is read as it is), largest share first."""
    small = image
    if image.mode != "RGB" or max(image.size) > 64:
        small = image.convert("RGB")
        small.thumbnail((64, 64), Image.Resampling.BILINEAR)
    pixels = np.asarray(small, dtype=np.float32).reshape(-1, 3) / 255.0
    if len(pixels) == 0:
        return []
    shares = np.bincount(_colour_codes(pixels), minlength=len(COLOUR_NAMES)) / len(pixels)
    order = np.argsort(-shares, kind="stable")
    return [
        Tag(COLOUR_NAMES[i], TagSource.COLOUR, round(float(shares[i]), 4))
        for i in order[:COLOUR_MAX_TAGS]
        if shares[i] >= COLOUR_MIN_SHARE
    ]


def orientation(width: int, height: int) -> str:
    """``landscape``, ``portrait`` or ``square`` (sides within ``SQUARE_TOLERANCE``)."""
    if abs(width - height) <= SQUARE_TOLERANCE * max(width, height):
        return "square"
    return "landscape" if width > height else "portrait"


def exif_tags(width: int, height: int, exif: Mapping[str, Any] | None) -> list[Tag]:
    """Orientation (of the upright image), camera make and model, and the year taken."""
    texts = [orientation(width, height)]
    exif = exif or {}
    for key in ("make", "model"):
        if isinstance(exif.get(key), str):
            texts.append(exif[key])
    taken = exif.get("takenAt")
    if isinstance(taken, str) and re.match(r"(19|20)\d\d-", taken):
        texts.append(taken[:4])
    return [Tag(t, TagSource.EXIF) for t in normalise_tags(texts)]


def model_free_tags(image: Image.Image, exif: Mapping[str, Any] | None) -> list[Tag]:
    """The tags every image gets without a model: ``exif_tags`` and ``colour_tags``."""
    return exif_tags(image.width, image.height, exif) + colour_tags(image)
