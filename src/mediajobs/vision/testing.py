"""A tiny CLIP model directory with the inputs, outputs and files of a real one, for the
tests and ``bench/embed.py`` (no weights can be downloaded where they run).

Its visual graph average-pools the image to 8 x 8 and projects the 192 values to
``embed_dim`` with a seeded random matrix; its textual graph averages seeded random token
embeddings over the text's tokens (padding left out). So distinct images get distinct
vectors, resized copies get near ones, distinct texts distinct ones, and the vectors mean
nothing: the model proves the plumbing, never semantic quality. Needs the ``onnx`` package
(a development dependency).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from mediajobs.vision.model import OPENAI_MEAN, OPENAI_STD

START, END, UNKNOWN = "<|startoftext|>", "<|endoftext|>", "<unk>"
_POOLED = 8  # the visual graph pools the image to 8 x 8 per channel
_OPSET = 17


def write_tiny_clip(
    directory: Path,
    *,
    embed_dim: int = 32,
    image_size: int = 224,
    context_length: int = 77,
    words: Iterable[str] = (),
    seed: int = 0,
    name: str | None = None,
    fixed_batch: bool = False,
    text_dtype: str = "int32",
    spectrum: float = 0.0,
) -> Path:
    """Write a CLIP model directory under ``directory`` and return it.

    ``words``: the tokenizer's vocabulary besides its special tokens (lowercased; a word
    outside it becomes ``<unk>``); ``fixed_batch``: the visual graph takes batches of exactly
    1 (like some exports); ``text_dtype``: ``int32`` (Immich's exports) or ``int64``.
    ``image_size`` must be a multiple of 8. ``spectrum``: the variance of the output's
    i-th dimension falls as ``i ** -spectrum`` (0: the same in every dimension); real
    embeddings concentrate their variance in few directions, which is what makes
    approximate nearest-neighbour search work on them (``bench/search.py`` uses 1).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    if image_size % _POOLED:
        raise ValueError("image_size must be a multiple of 8")
    directory = Path(directory)
    (directory / "visual").mkdir(parents=True, exist_ok=True)
    (directory / "textual").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)

    vocabulary = [START, END, UNKNOWN]
    for word in words:
        for part in word.lower().split():
            if part not in vocabulary:
                vocabulary.append(part)
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocabulary)}, UNKNOWN))
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Lowercase()])
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{START} $A {END}", special_tokens=[(START, 0), (END, 1)]
    )
    tokenizer.save(str(directory / "textual" / "tokenizer.json"))

    features = 3 * _POOLED * _POOLED
    batch: int | str = 1 if fixed_batch else "batch"
    kernel = image_size // _POOLED
    # dimension i of every output is scaled by i ** (-spectrum / 2): its variance by i ** -spectrum
    scale = (np.arange(1, embed_dim + 1, dtype=np.float32) ** (-spectrum / 2)).astype(np.float32)
    projection = rng.standard_normal((features, embed_dim)).astype(np.float32) * scale
    visual = helper.make_graph(
        [
            helper.make_node(
                "AveragePool",
                ["image"],
                ["pooled"],
                kernel_shape=[kernel] * 2,
                strides=[kernel] * 2,
            ),
            helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
            helper.make_node("MatMul", ["flat", "projection"], ["embedding"]),
        ],
        "tiny_clip_visual",
        [
            helper.make_tensor_value_info(
                "image", TensorProto.FLOAT, [batch, 3, image_size, image_size]
            )
        ],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [batch, embed_dim])],
        [numpy_helper.from_array(projection, "projection")],
    )
    token_vectors = rng.standard_normal((len(vocabulary), embed_dim)).astype(np.float32) * scale
    id_type = TensorProto.INT64 if text_dtype == "int64" else TensorProto.INT32
    id_numpy = np.int64 if text_dtype == "int64" else np.int32
    # The mean of the token vectors over the positions that are not padding (the pad token
    # is <|endoftext|>, id 1): sum(vectors * mask) / max(sum(mask), 1).
    textual = helper.make_graph(
        [
            helper.make_node("Gather", ["tokens", "text"], ["per_token"], axis=0),
            helper.make_node("Equal", ["text", "pad_id"], ["is_pad"]),
            helper.make_node("Not", ["is_pad"], ["is_token"]),
            helper.make_node("Cast", ["is_token"], ["mask"], to=TensorProto.FLOAT),
            helper.make_node("Unsqueeze", ["mask", "last_axis"], ["mask3"]),
            helper.make_node("Mul", ["per_token", "mask3"], ["masked"]),
            helper.make_node("ReduceSum", ["masked", "token_axis"], ["summed"], keepdims=0),
            helper.make_node("ReduceSum", ["mask", "token_axis"], ["count"], keepdims=1),
            helper.make_node("Max", ["count", "one"], ["divisor"]),
            helper.make_node("Div", ["summed", "divisor"], ["embedding"]),
        ],
        "tiny_clip_textual",
        [helper.make_tensor_value_info("text", id_type, ["batch", context_length])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", embed_dim])],
        [
            numpy_helper.from_array(token_vectors, "tokens"),
            numpy_helper.from_array(np.array(vocabulary.index(END), dtype=id_numpy), "pad_id"),
            numpy_helper.from_array(np.array([2], dtype=np.int64), "last_axis"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "token_axis"),
            numpy_helper.from_array(np.array(1.0, dtype=np.float32), "one"),
        ],
    )
    for graph, part in ((visual, "visual"), (textual, "textual")):
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", _OPSET)])
        model.ir_version = 8  # what every onnxruntime since 1.14 reads
        onnx.checker.check_model(model)
        onnx.save(model, str(directory / part / "model.onnx"))

    config = {
        "embed_dim": embed_dim,
        "vision_cfg": {"image_size": image_size},
        "text_cfg": {"context_length": context_length, "vocab_size": len(vocabulary)},
    }
    if name:
        config["name"] = name
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    preprocess = {
        "size": [image_size, image_size],
        "mode": "RGB",
        "mean": list(OPENAI_MEAN),
        "std": list(OPENAI_STD),
        "interpolation": "bicubic",
        "resize_mode": "shortest",
        "fill_color": 0,
    }
    (directory / "visual" / "preprocess_cfg.json").write_text(json.dumps(preprocess, indent=2))
    (directory / "textual" / "tokenizer_config.json").write_text(json.dumps({"pad_token": END}))
    return directory
