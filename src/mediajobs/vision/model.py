"""A CLIP model run with onnxruntime, loaded from a directory in the layout of Immich's
machine-learning service, so a deployment can reuse the exports it already has::

    <name>/config.json                   {"embed_dim": 512, "text_cfg": {"context_length": 77}, ...}
    <name>/visual/model.onnx             input "image" float32 [N, 3, S, S] -> [N, embed_dim]
    <name>/visual/preprocess_cfg.json    {"size": S, "mean": [...], "std": [...],
                                          "interpolation": "bicubic", "resize_mode": "shortest"}
    <name>/textual/model.onnx            input "text" int32 or int64 [N, context_length]
    <name>/textual/tokenizer.json        a Hugging Face ``tokenizers`` file
    <name>/textual/tokenizer_config.json {"pad_token": "<|endoftext|>"} (optional)

``preprocess_cfg.json`` and ``tokenizer.json`` are also found at the top of the directory.
The model's name is ``config.json``'s ``name`` when present, else the directory's name
(Immich names directories after the model: ``ViT-B-32__openai``).

Every embedding this module returns is L2-normalised (unit length), so cosine similarity is
a dot product and pgvector's ``<=>`` (cosine distance) equals ``1 - a·b``. No torch and no
download at run time: what the directory holds is what runs.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from cachetools import LRUCache
from PIL import Image

from mediajobs.errors import MediaJobsError

Vectors = npt.NDArray[np.float32]

CPU_PROVIDER = "CPUExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"
# Images per forward pass (the figures: 32 on a CPU, 64 on a GPU, where larger
# batches keep the device busy; seed 003 measured about 5x over one at a time on a GPU).
CPU_BATCH_SIZE = 32
GPU_BATCH_SIZE = 64
MAX_EMBED_DIM = 2000  # pgvector's HNSW limit (vector columns; embedding_indexes checks it)
TEXT_CACHE_SIZE = 1024  # text queries kept embedded (a few MB at 512 dimensions)

# CLIP's own normalisation constants (Radford et al. 2021, openai/CLIP clip.py _transform),
# used when preprocess_cfg.json gives none.
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
_RESAMPLING = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
}
_RESIZE_MODES = ("shortest", "longest", "squash")


class ModelInvalid(MediaJobsError):
    """A CLIP model directory that is missing a file, holds malformed JSON, or whose ONNX
    graphs do not have CLIP's inputs and outputs. ``code``: ``model_missing`` (no such
    directory or file) or ``model_invalid``; the message names the file."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Preprocess:
    """How an image becomes the visual model's input (open_clip's ``image_transform``):
    resize by ``resize_mode`` with ``interpolation``, centre-crop (or pad, for ``longest``)
    to ``size`` x ``size``, scale to [0, 1], subtract ``mean`` and divide by ``std`` per
    channel. ``resize_mode``: ``shortest`` (the shorter side becomes ``size``, then crop;
    CLIP's default), ``longest`` (the longer side becomes ``size``, then pad with
    ``fill``), ``squash`` (both sides become ``size``)."""

    size: int = 224
    mean: tuple[float, float, float] = OPENAI_MEAN
    std: tuple[float, float, float] = OPENAI_STD
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"
    fill: int = 0

    @classmethod
    def from_json(cls, value: Any, path: Path) -> Preprocess:
        """Read ``preprocess_cfg.json``; raise ``ModelInvalid`` naming ``path``."""
        if not isinstance(value, dict):
            raise ModelInvalid("model_invalid", f"{path}: expected a JSON object")
        try:
            size = value.get("size", 224)
            size = int(size[0] if isinstance(size, list) else size)
            mean = tuple(float(x) for x in value.get("mean", OPENAI_MEAN))
            std = tuple(float(x) for x in value.get("std", OPENAI_STD))
            interpolation = str(value.get("interpolation", "bicubic")).lower()
            resize_mode = str(value.get("resize_mode", "shortest")).lower()
            fill = int(value.get("fill_color", 0))
        except (TypeError, ValueError) as exc:
            raise ModelInvalid("model_invalid", f"{path}: {exc}") from None
        if not 8 <= size <= 4096:
            raise ModelInvalid("model_invalid", f"{path}: size {size} is not in [8, 4096]")
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ModelInvalid("model_invalid", f"{path}: mean and std need 3 values, std > 0")
        if interpolation not in _RESAMPLING:
            raise ModelInvalid(
                "model_invalid",
                f"{path}: interpolation {interpolation!r} is not one of {', '.join(_RESAMPLING)}",
            )
        if resize_mode not in _RESIZE_MODES:
            raise ModelInvalid(
                "model_invalid",
                f"{path}: resize_mode {resize_mode!r} is not one of {', '.join(_RESIZE_MODES)}",
            )
        return cls(size, mean, std, interpolation, resize_mode, fill)

    def __call__(self, image: Image.Image) -> npt.NDArray[np.float32]:
        """``image`` (any mode, any size) -> float32 array [3, size, size]."""
        if image.mode != "RGB":
            image = image.convert("RGB")
        size, resample = self.size, _RESAMPLING[self.interpolation]
        width, height = image.size
        if self.resize_mode == "squash":
            image = image.resize((size, size), resample, reducing_gap=3.0)
        elif self.resize_mode == "shortest":
            scale = size / min(width, height)
            target = (max(size, round(width * scale)), max(size, round(height * scale)))
            image = image.resize(target, resample, reducing_gap=3.0)
            left, top = (target[0] - size) // 2, (target[1] - size) // 2
            image = image.crop((left, top, left + size, top + size))
        else:
            scale = size / max(width, height)
            target = (max(1, round(width * scale)), max(1, round(height * scale)))
            resized = image.resize(target, resample, reducing_gap=3.0)
            image = Image.new("RGB", (size, size), (self.fill,) * 3)
            image.paste(resized, ((size - target[0]) // 2, (size - target[1]) // 2))
        pixels = np.asarray(image, dtype=np.float32) * np.float32(1 / 255)
        pixels -= np.asarray(self.mean, dtype=np.float32)
        pixels /= np.asarray(self.std, dtype=np.float32)
        return np.ascontiguousarray(pixels.transpose(2, 0, 1))


@dataclass(frozen=True)
class ModelInfo:
    """What ``mediajobs models check`` and ``readyz`` say about a loaded model."""

    name: str
    directory: Path
    embed_dim: int
    image_size: int
    context_length: int
    providers: tuple[str, ...]
    batch_size: int

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "directory": str(self.directory),
            "embedDim": self.embed_dim,
            "imageSize": self.image_size,
            "contextLength": self.context_length,
            "providers": list(self.providers),
            "batchSize": self.batch_size,
        }


def l2_normalise(vectors: npt.NDArray[Any]) -> Vectors:
    """Rows of ``vectors`` ([N, d]) scaled to unit length (float32); a zero row stays zero."""
    array = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(array, axis=-1, keepdims=True)
    normalised: Vectors = np.divide(array, np.maximum(norms, np.float32(1e-12)), dtype=np.float32)
    return normalised


class ClipModel:
    """A loaded CLIP model: ``encode_images`` and ``encode_text`` give unit vectors of
    ``info.embed_dim`` dimensions. Thread-safe: onnxruntime sessions may run concurrently,
    and the text cache has a lock. Build with ``load_clip_model``."""

    def __init__(
        self,
        info: ModelInfo,
        *,
        preprocess: Preprocess,
        visual: Any,
        textual: Any,
        tokenizer: Any,
    ) -> None:
        self.info = info
        self.preprocess = preprocess
        self._visual = visual
        self._textual = textual
        self._tokenizer = tokenizer
        image_input = visual.get_inputs()[0]
        self._image_input = image_input.name
        fixed = image_input.shape[0]
        # Some exports fix the batch at 1; those run one image per call.
        self._visual_batch = fixed if isinstance(fixed, int) and fixed > 0 else info.batch_size
        text_input = textual.get_inputs()[0]
        self._text_input = text_input.name
        self._text_dtype = np.int64 if "int64" in text_input.type else np.int32
        self._text_cache: LRUCache[str, Vectors] = LRUCache(TEXT_CACHE_SIZE)
        self._lock = threading.Lock()
        self.text_seconds = self._time_text()

    def _time_text(self) -> float:
        """Seconds one uncached text query takes (the best of three, after a first run):
        callers run a query this cheap where they are rather than hop to a thread."""
        self.encode_texts(["warm up"])
        best = float("inf")
        for probe in ("a photo of a dog", "a red car", "mountains at night"):
            started = time.perf_counter()
            self.encode_texts([probe])
            best = min(best, time.perf_counter() - started)
        return best

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def embed_dim(self) -> int:
        return self.info.embed_dim

    def encode_pixels(self, pixels: npt.NDArray[np.float32]) -> Vectors:
        """Preprocessed images ([N, 3, S, S] float32) -> unit vectors [N, embed_dim], in
        passes of the model's batch size. Raises ``ModelInvalid`` when the model answers
        with another shape."""
        out: list[Vectors] = []
        step = self._visual_batch
        for start in range(0, len(pixels), step):
            chunk = pixels[start : start + step]
            result = self._visual.run(None, {self._image_input: chunk})[0]
            out.append(self._checked(result, len(chunk), "visual"))
        if not out:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        return l2_normalise(np.concatenate(out))

    def encode_images(self, images: Sequence[Image.Image]) -> Vectors:
        """Decoded images -> unit vectors [len(images), embed_dim] (preprocessed here)."""
        if not images:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        return self.encode_pixels(np.stack([self.preprocess(image) for image in images]))

    def encode_texts(self, texts: Sequence[str]) -> Vectors:
        """Texts -> unit vectors [len(texts), embed_dim], uncached (vocabularies)."""
        if not texts:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        encodings = (
            [self._tokenizer.encode(texts[0])]
            if len(texts) == 1
            else self._tokenizer.encode_batch(list(texts))
        )
        ids = np.asarray([e.ids for e in encodings], dtype=self._text_dtype)
        result = self._textual.run(None, {self._text_input: ids})[0]
        return l2_normalise(self._checked(result, len(texts), "textual"))

    def cached_text(self, text: str) -> Vectors | None:
        """The vector of a text query ``encode_text`` made before, or None (no compute)."""
        with self._lock:
            return self._text_cache.get(text)

    def encode_text(self, text: str) -> Vectors:
        """One text query -> a unit vector [embed_dim]; the last ``TEXT_CACHE_SIZE``
        queries are cached (a search typed twice costs one forward pass)."""
        cached = self.cached_text(text)
        if cached is not None:
            return cached
        vector: Vectors = self.encode_texts([text])[0]
        vector.setflags(write=False)
        with self._lock:
            self._text_cache[text] = vector
        return vector

    def _checked(self, result: Any, rows: int, part: str) -> Vectors:
        array = np.asarray(result, dtype=np.float32)
        if array.ndim == 3 and array.shape[1] == 1:  # [N, 1, d] exports
            array = array[:, 0, :]
        if array.shape != (rows, self.embed_dim):
            raise ModelInvalid(
                "model_invalid",
                f"the {part} model answered with shape {list(array.shape)}, "
                f"expected [{rows}, {self.embed_dim}] (config.json embed_dim)",
            )
        return array


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelInvalid("model_missing", f"{path} is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelInvalid("model_invalid", f"{path}: {exc}") from None


def _first(directory: Path, *candidates: str) -> Path:
    for candidate in candidates:
        path = directory / candidate
        if path.is_file():
            return path
    raise ModelInvalid(
        "model_missing",
        f"{directory / candidates[0]} is missing (a CLIP model directory "
        "holds config.json, visual/model.onnx, visual/preprocess_cfg.json, "
        "textual/model.onnx and textual/tokenizer.json)",
    )


def choose_providers(available: Sequence[str], wanted: Sequence[str] | None = None) -> list[str]:
    """onnxruntime execution providers to use, best first: ``wanted`` when given (each must
    be available, else ``ModelInvalid``), else CUDA when this onnxruntime has it, then CPU."""
    if wanted:
        missing = [p for p in wanted if p not in available]
        if missing:
            raise ModelInvalid(
                "model_invalid",
                f"onnxruntime has no {', '.join(missing)} here (available: {', '.join(available)})",
            )
        return list(wanted)
    chosen = [CUDA_PROVIDER] if CUDA_PROVIDER in available else []
    return [*chosen, CPU_PROVIDER]


def load_clip_model(
    directory: Path,
    *,
    batch_size: int | None = None,
    providers: Sequence[str] | None = None,
    threads: int = 0,
) -> ClipModel:
    """Load the CLIP model in ``directory`` (the layout in this module's docstring).

    ``batch_size``: images per forward pass (default 32 on a CPU, 64 with CUDA);
    ``providers``: onnxruntime execution providers (default: CUDA when present, then CPU);
    ``threads``: intra-op threads per session (0: onnxruntime's default, one per core).
    Raises ``ModelInvalid`` (code ``model_missing`` or ``model_invalid``) naming the file.
    """
    import onnxruntime as ort
    from tokenizers import Tokenizer

    directory = Path(directory).expanduser()
    if not directory.is_dir():
        raise ModelInvalid("model_missing", f"{directory} is not a directory")
    config = _read_json(directory / "config.json")
    if not isinstance(config, dict):
        raise ModelInvalid("model_invalid", f"{directory / 'config.json'}: expected an object")
    embed_dim = config.get("embed_dim")
    if not isinstance(embed_dim, int) or not 1 <= embed_dim <= MAX_EMBED_DIM:
        raise ModelInvalid(
            "model_invalid",
            f"{directory / 'config.json'}: embed_dim must be an integer in "
            f"[1, {MAX_EMBED_DIM}] (pgvector's HNSW index takes at most 2000 dimensions)",
        )
    text_cfg = config.get("text_cfg") or {}
    context_length = int(text_cfg.get("context_length", 77)) if isinstance(text_cfg, dict) else 77
    preprocess_path = _first(directory, "visual/preprocess_cfg.json", "preprocess_cfg.json")
    preprocess = Preprocess.from_json(_read_json(preprocess_path), preprocess_path)
    visual_path = _first(directory, "visual/model.onnx")
    textual_path = _first(directory, "textual/model.onnx")
    tokenizer_path = _first(directory, "textual/tokenizer.json", "tokenizer.json")

    chosen = choose_providers(ort.get_available_providers(), providers)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3  # errors only: no provider chatter on stderr
    sessions = []
    for path in (visual_path, textual_path):
        try:
            sessions.append(ort.InferenceSession(str(path), options, providers=chosen))
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise ModelInvalid("model_invalid", f"{path}: {exc}") from None
    visual, textual = sessions
    try:
        tokenizer = Tokenizer.from_file(str(tokenizer_path))
    except Exception as exc:  # tokenizers raises a bare Exception on a malformed file
        raise ModelInvalid("model_invalid", f"{tokenizer_path}: {exc}") from None
    pad_token = "<|endoftext|>"
    tokenizer_cfg_path = tokenizer_path.parent / "tokenizer_config.json"
    if tokenizer_cfg_path.is_file():
        tokenizer_cfg = _read_json(tokenizer_cfg_path)
        if isinstance(tokenizer_cfg, dict) and isinstance(tokenizer_cfg.get("pad_token"), str):
            pad_token = tokenizer_cfg["pad_token"]
    pad_id = tokenizer.token_to_id(pad_token)
    tokenizer.enable_padding(
        length=context_length, pad_token=pad_token, pad_id=0 if pad_id is None else pad_id
    )
    tokenizer.enable_truncation(max_length=context_length)

    used = tuple(visual.get_providers())
    default_batch = GPU_BATCH_SIZE if CUDA_PROVIDER in used else CPU_BATCH_SIZE
    name = config.get("name")
    info = ModelInfo(
        name=name if isinstance(name, str) and name else directory.resolve().name,
        directory=directory,
        embed_dim=embed_dim,
        image_size=preprocess.size,
        context_length=context_length,
        providers=used,
        batch_size=batch_size or default_batch,
    )
    try:
        model = ClipModel(
            info, preprocess=preprocess, visual=visual, textual=textual, tokenizer=tokenizer
        )
    except ModelInvalid:
        raise
    except Exception as exc:  # onnxruntime's own errors: the textual graph does not run
        raise ModelInvalid("model_invalid", f"{textual_path}: {exc}") from None
    image_input = visual.get_inputs()[0]
    if len(image_input.shape) != 4:
        raise ModelInvalid(
            "model_invalid", f"{visual_path}: input {image_input.name!r} is not [N, 3, S, S]"
        )
    return model
