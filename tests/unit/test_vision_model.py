"""The CLIP model runner against a tiny model the tests write (the inputs, outputs and
files of a real Immich export): shapes, unit length, batches equal to single images, text
queries, the loader's refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mediajobs.vision.model import (
    CPU_PROVIDER,
    CUDA_PROVIDER,
    ModelInvalid,
    Preprocess,
    choose_providers,
    load_clip_model,
)
from mediajobs.vision.testing import write_tiny_clip


def _photos(count: int) -> list[Image.Image]:
    rng = np.random.default_rng(7)
    sizes = [(640, 480), (300, 900), (256, 256), (1000, 200)]
    return [
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        for w, h in (sizes[i % len(sizes)] for i in range(count))
    ]


def test_image_embeddings_have_the_configured_dimension_and_unit_length(
    tiny_clip_dir: Path,
) -> None:
    model = load_clip_model(tiny_clip_dir)
    vectors = model.encode_images(_photos(5))
    assert vectors.shape == (5, 32)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    assert model.info.name == "tiny-clip"
    assert model.info.embed_dim == 32
    assert model.info.providers == (CPU_PROVIDER,)
    assert model.info.batch_size == 32


def test_a_batch_gives_the_same_vectors_as_one_image_at_a_time(tiny_clip_dir: Path) -> None:
    model = load_clip_model(tiny_clip_dir, batch_size=3)  # 7 images: passes of 3, 3, 1
    photos = _photos(7)
    batched = model.encode_images(photos)
    single = np.stack([model.encode_images([photo])[0] for photo in photos])
    np.testing.assert_allclose(batched, single, atol=1e-6)
    # distinct images give distinct vectors
    assert float(batched[0] @ batched[1]) < 0.999


def test_a_resized_copy_embeds_near_the_original(tiny_clip_dir: Path) -> None:
    model = load_clip_model(tiny_clip_dir)
    base = np.zeros((480, 640, 3), dtype=np.uint8)
    base[:, :320] = (200, 40, 40)
    base[:240, 320:] = (30, 160, 220)
    photo = Image.fromarray(base)
    other = Image.fromarray(np.full((480, 640, 3), (20, 200, 60), dtype=np.uint8))
    vectors = model.encode_images([photo, photo.resize((320, 240)), other])
    assert float(vectors[0] @ vectors[1]) > 0.99
    assert float(vectors[0] @ vectors[2]) < float(vectors[0] @ vectors[1])


def test_a_text_query_is_a_cached_unit_vector(tiny_clip_dir: Path) -> None:
    model = load_clip_model(tiny_clip_dir)
    first = model.encode_text("a dog on the beach")
    assert first.shape == (32,)
    assert abs(float(np.linalg.norm(first)) - 1.0) < 1e-5
    assert model.encode_text("a dog on the beach") is first
    assert not np.allclose(model.encode_text("a red car"), first)
    batch = model.encode_texts(["a dog on the beach", "a red car"])
    np.testing.assert_allclose(batch[0], first, atol=1e-6)


def test_exports_with_a_fixed_batch_and_int64_tokens_are_run(tmp_path: Path) -> None:
    directory = write_tiny_clip(
        tmp_path / "fixed", fixed_batch=True, text_dtype="int64", embed_dim=16, name="Fixed"
    )
    model = load_clip_model(directory)
    assert model.info.name == "Fixed"
    assert model.encode_images(_photos(3)).shape == (3, 16)
    assert model.encode_text("hello").shape == (16,)


def test_preprocessing_follows_the_resize_modes() -> None:
    image = Image.new("RGB", (400, 200), (255, 0, 0))
    image.paste((0, 0, 255), (0, 0, 100, 200))  # a blue quarter on the left
    shortest = Preprocess(size=64)(image)
    assert shortest.shape == (3, 64, 64)
    # shortest: the centre is cropped, the blue quarter is gone
    assert shortest[2].max() < 0
    longest = Preprocess(size=64, resize_mode="longest")(image)
    # longest: the whole image, padded top and bottom with black
    assert longest[2, 32, 2] > 0 and longest[0, 0, 32] < longest[0, 32, 40]
    squash = Preprocess(size=64, resize_mode="squash")(Image.new("L", (10, 30), 255))
    assert squash.shape == (3, 64, 64) and squash.min() > 1.5


@pytest.mark.parametrize(
    ("breakage", "code", "named"),
    [
        (lambda d: shutil.rmtree(d / "visual"), "model_missing", "visual"),
        (lambda d: (d / "config.json").unlink(), "model_missing", "config.json"),
        (lambda d: (d / "config.json").write_text("{"), "model_invalid", "config.json"),
        (
            lambda d: (d / "config.json").write_text('{"embed_dim": "x"}'),
            "model_invalid",
            "embed_dim",
        ),
        (
            lambda d: (d / "visual" / "preprocess_cfg.json").write_text('{"interpolation": "x"}'),
            "model_invalid",
            "interpolation",
        ),
        (lambda d: (d / "textual" / "model.onnx").write_bytes(b"junk"), "model_invalid", "textual"),
        (
            lambda d: (d / "textual" / "tokenizer.json").write_text("{}"),
            "model_invalid",
            "tokenizer",
        ),
    ],
)
def test_a_broken_directory_is_refused_naming_the_file(
    tmp_path: Path, breakage: object, code: str, named: str
) -> None:
    directory = write_tiny_clip(tmp_path / "m")
    breakage(directory)  # type: ignore[operator]
    with pytest.raises(ModelInvalid) as caught:
        load_clip_model(directory)
    assert caught.value.code == code
    assert named in str(caught.value)


def test_a_model_answering_another_dimension_is_refused(tmp_path: Path) -> None:
    directory = write_tiny_clip(tmp_path / "m", embed_dim=16)
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, "embed_dim": 24}))
    with pytest.raises(ModelInvalid, match=r"textual model answered with shape \[1, 16\]"):
        load_clip_model(directory)  # refused at load: its text query is timed there


def test_providers_prefer_cuda_and_refuse_missing_ones() -> None:
    assert choose_providers([CPU_PROVIDER]) == [CPU_PROVIDER]
    assert choose_providers([CUDA_PROVIDER, CPU_PROVIDER]) == [CUDA_PROVIDER, CPU_PROVIDER]
    with pytest.raises(ModelInvalid, match="CUDAExecutionProvider"):
        choose_providers([CPU_PROVIDER], [CUDA_PROVIDER])
