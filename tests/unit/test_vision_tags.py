"""Tags without I/O: seed 003's normalisation, the vocabulary file, zero-shot tags over the
tiny model, dominant colours, orientation and camera tags; perceptual hashes."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mediajobs.vision.model import ModelInvalid, load_clip_model
from mediajobs.vision.phash import NEAR_DUPLICATE_BITS, hamming, perceptual_hash
from mediajobs.vision.tags import (
    COLOUR_NAMES,
    Tag,
    TagSource,
    ZeroShotTagger,
    _colour_codes,
    colour_tags,
    exif_tags,
    load_vocabulary,
    model_free_tags,
    normalise_tag,
    normalise_tags,
    orientation,
)
from tests.support.images import encode, photo, quadrants


def test_tags_are_lowercased_trimmed_without_stop_words_and_deduplicated() -> None:
    assert normalise_tags(
        ["  The Beach ", "beach", "A  Dog", "the", "\uff23\uff41\uff52", "dog"]
    ) == [
        "beach",
        "dog",
        "car",
    ]
    assert normalise_tag("x" * 101) is None
    assert normalise_tag("tab\x00bed") is None
    assert normalise_tag("birthday   cake") == "birthday cake"


def test_the_default_vocabulary_holds_a_few_hundred_normalised_concepts(tmp_path: Path) -> None:
    concepts = load_vocabulary()
    assert 250 <= len(concepts) <= 1000
    assert len(set(concepts)) == len(concepts)
    assert all(normalise_tag(c) == c for c in concepts)
    own = tmp_path / "mine.txt"
    own.write_text("# ours\nRed Car\n\nthe red car  # again\nboat\n")
    assert load_vocabulary(own) == ["red car", "boat"]
    own.write_text("# nothing\n\n")
    with pytest.raises(ModelInvalid, match="holds no concept"):
        load_vocabulary(own)
    with pytest.raises(ModelInvalid) as caught:
        load_vocabulary(tmp_path / "absent.txt")
    assert caught.value.code == "vocabulary_invalid"


def test_zero_shot_tags_are_the_top_k_above_the_threshold(tiny_clip_dir: Path) -> None:
    model = load_clip_model(tiny_clip_dir)
    vocabulary = ["dog", "cat", "red car", "beach"]
    images = [quadrants(), photo(640, 480)]
    embeddings = model.encode_images(images)
    everything = ZeroShotTagger(model, vocabulary, top_k=4, threshold=0.0).tag(embeddings)
    assert [len(tags) for tags in everything] == [4, 4]
    for tags in everything:
        assert {t.tag for t in tags} == set(vocabulary)
        assert all(t.source is TagSource.CLIP for t in tags)
        confidences = [t.confidence for t in tags]
        assert confidences == sorted(confidences, reverse=True)  # type: ignore[type-var]
        assert abs(sum(confidences) - 1.0) < 0.01  # type: ignore[arg-type]
    top_two = ZeroShotTagger(model, vocabulary, top_k=2, threshold=0.0).tag(embeddings)
    assert [t.tag for t in top_two[0]] == [t.tag for t in everything[0][:2]]
    best = max(t.confidence or 0.0 for t in everything[0])
    above = ZeroShotTagger(model, vocabulary, top_k=4, threshold=best + 1e-3).tag(embeddings)
    assert above[0] == []
    assert ZeroShotTagger(model, vocabulary).tag(np.zeros((0, 32), np.float32)) == []


@pytest.mark.parametrize(
    ("rgb", "name"),
    [
        ((230, 20, 20), "red"),
        ((139, 0, 0), "red"),
        ((255, 165, 0), "orange"),
        ((250, 240, 30), "yellow"),
        ((20, 160, 40), "green"),
        ((30, 80, 220), "blue"),
        ((128, 0, 128), "purple"),
        ((255, 192, 203), "pink"),
        ((120, 70, 20), "brown"),
        ((250, 250, 250), "white"),
        ((128, 128, 128), "grey"),
        ((8, 8, 8), "black"),
    ],
)
def test_a_plain_image_is_tagged_with_its_colour_name(rgb: tuple[int, int, int], name: str) -> None:
    assert colour_tags(Image.new("RGB", (120, 80), rgb)) == [Tag(name, TagSource.COLOUR, 1.0)]


def test_hue_sector_bounds_belong_to_the_next_sector() -> None:
    # hue 15 degrees (r 1, g 0.25) is orange, 345 (r 1, b 0.25) red again, 10 is red
    pixels = np.array([[1, 0.25, 0], [1, 0, 0.25], [1, 1 / 6, 0]], dtype=np.float32)
    names = [COLOUR_NAMES[c] for c in _colour_codes(pixels)]
    assert names == ["orange", "red", "red"]


def test_tied_colours_are_listed_by_name() -> None:
    halves = Image.new("RGB", (100, 100), (20, 40, 220))
    halves.paste((20, 200, 40), (0, 0, 100, 50))
    assert [t.tag for t in colour_tags(halves)] == ["blue", "green"]


def test_colour_tags_are_the_colours_covering_enough_of_the_image() -> None:
    tags = colour_tags(quadrants())  # red, green, blue and white quarters: 3 at most
    assert len(tags) == 3
    assert {t.tag for t in tags} < {"red", "green", "blue", "white"}
    assert all(t.confidence is not None and abs(t.confidence - 0.25) < 0.02 for t in tags)
    mostly_blue = Image.new("RGB", (100, 100), (30, 80, 220))
    mostly_blue.paste((230, 20, 20), (0, 0, 100, 10))  # 10% red: under the share
    assert [t.tag for t in colour_tags(mostly_blue)] == ["blue"]


def test_orientation_and_camera_tags() -> None:
    assert orientation(4032, 3024) == "landscape"
    assert orientation(3024, 4032) == "portrait"
    assert orientation(1000, 990) == "square"
    exif = {"make": "Canon", "model": "Canon EOS R5", "takenAt": "2024-05-06T07:08:09"}
    assert [t.tag for t in exif_tags(4032, 3024, exif)] == [
        "landscape",
        "canon",
        "canon eos r5",
        "2024",
    ]
    assert all(t.source is TagSource.EXIF and t.confidence is None for t in exif_tags(1, 1, exif))
    assert [t.tag for t in exif_tags(10, 20, {"takenAt": "0000-00-00T00:00:00"})] == ["portrait"]
    tags = model_free_tags(Image.new("RGB", (300, 200), (20, 160, 40)), None)
    assert [(t.tag, t.source) for t in tags] == [
        ("landscape", TagSource.EXIF),
        ("green", TagSource.COLOUR),
    ]


def test_a_resize_and_a_re_encode_hash_near_the_photo_and_an_unrelated_one_far() -> None:
    original = photo(1600, 1200)
    base = perceptual_hash(original)
    half = original.resize((800, 600))
    q60 = Image.open(io.BytesIO(encode(original, "JPEG", quality=60)))
    assert hamming(base, perceptual_hash(half)) <= NEAR_DUPLICATE_BITS
    assert hamming(base, perceptual_hash(q60)) <= NEAR_DUPLICATE_BITS
    assert hamming(base, perceptual_hash(quadrants())) > 2 * NEAR_DUPLICATE_BITS
    assert hamming(base, perceptual_hash(original.rotate(180))) > 2 * NEAR_DUPLICATE_BITS


def test_hashes_fit_a_signed_bigint() -> None:
    values = [
        perceptual_hash(img) for img in (photo(320, 240), quadrants(), Image.new("L", (9, 9)))
    ]
    assert all(-(2**63) <= v < 2**63 for v in values)
    assert hamming(-1, 0) == 64 and hamming(5, 5) == 0
