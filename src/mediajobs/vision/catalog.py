"""The CLIP models one process may use (``MEDIAJOBS_CLIP_MODEL_DIR``: one directory, or
several separated by ``os.pathsep``), each loaded on first use and kept, by name.

The first directory is the model a library starts with. The others stay loadable so that
during a model switch each process can embed with, and search by, whichever model an
embedding index names (``db.vectors``): the index says which model, the catalog where it
lives.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Sequence
from pathlib import Path

from mediajobs.config import Settings
from mediajobs.vision.model import ClipModel, ModelInvalid, load_clip_model
from mediajobs.vision.tags import (
    DEFAULT_THRESHOLD,
    DEFAULT_TOP_K,
    ZeroShotTagger,
    load_vocabulary,
)


def model_name(directory: Path) -> str:
    """A model directory's name without loading it: ``config.json``'s ``name``, else the
    directory's own name (``ModelInvalid`` when ``config.json`` cannot be read)."""
    path = Path(directory) / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelInvalid("model_missing", f"{path} is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelInvalid("model_invalid", f"{path}: {exc}") from None
    name = config.get("name") if isinstance(config, dict) else None
    return name if isinstance(name, str) and name else Path(directory).resolve().name


class ModelCatalog:
    """Models by name, loaded once per process on first use (thread-safe: handlers load
    them in worker threads). ``batch_size`` (None: 32 on a CPU, 64 with CUDA),
    ``vocabulary`` (None: the shipped list), ``top_k`` and ``threshold`` configure every
    model's zero-shot tagger."""

    def __init__(
        self,
        directories: Sequence[Path] = (),
        *,
        batch_size: int | None = None,
        vocabulary: Path | None = None,
        top_k: int = DEFAULT_TOP_K,
        threshold: float = DEFAULT_THRESHOLD,
    ) -> None:
        self.directories = tuple(Path(d) for d in directories)
        self._batch_size = batch_size
        self._vocabulary_path = vocabulary
        self._top_k = top_k
        self._threshold = threshold
        self._names: dict[str, Path] | None = None
        self._models: dict[str, ClipModel] = {}
        self._taggers: dict[str, ZeroShotTagger] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> ModelCatalog:
        """The models ``MEDIAJOBS_CLIP_MODEL_DIR`` names (none: understanding without one)."""
        return cls(
            settings.clip_model_dirs,
            batch_size=settings.clip_batch_size or None,
            vocabulary=settings.clip_vocabulary,
            top_k=settings.clip_tag_top_k,
            threshold=settings.clip_tag_threshold,
        )

    @property
    def enabled(self) -> bool:
        """Whether any model is configured."""
        return bool(self.directories)

    def names(self) -> dict[str, Path]:
        """Name -> directory, in the configured order. Raises ``ModelInvalid`` for an
        unreadable ``config.json`` or two directories of one name."""
        if self._names is None:
            found: dict[str, Path] = {}
            for directory in self.directories:
                name = model_name(directory)
                if name in found and found[name].resolve() == Path(directory).resolve():
                    continue  # the same directory listed twice
                if name in found:
                    raise ModelInvalid(
                        "model_invalid",
                        f"{found[name]} and {directory} are both named {name!r}",
                    )
                found[name] = directory
            self._names = found
        return self._names

    @property
    def default_name(self) -> str | None:
        """The first configured model's name (a library's first index uses it)."""
        return next(iter(self.names()), None) if self.enabled else None

    def has(self, name: str) -> bool:
        """Whether ``name`` is one of the configured models (never raises)."""
        try:
            return name in self.names()
        except ModelInvalid:
            return False

    def model(self, name: str | None = None) -> ClipModel:
        """The model ``name`` (None: the default), loaded on first use. Raises
        ``ModelInvalid``: ``model_unknown`` for a name not configured here, else the
        loader's codes."""
        name = name or self.default_name
        if name is None:
            raise ModelInvalid("model_unknown", "no CLIP model is configured")
        with self._lock:
            if name not in self._models:
                directory = self.names().get(name)
                if directory is None:
                    raise ModelInvalid(
                        "model_unknown",
                        f"model {name!r} is not among MEDIAJOBS_CLIP_MODEL_DIR "
                        f"({', '.join(self.names()) or 'none'})",
                    )
                self._models[name] = load_clip_model(directory, batch_size=self._batch_size)
            return self._models[name]

    async def get(self, name: str | None = None) -> ClipModel:
        """``model(name)`` from async code: at once when loaded, else loaded in a thread
        (loading reads and compiles ONNX graphs: seconds for a real model)."""
        loaded = self._models.get(name or self.default_name or "")
        if loaded is not None:
            return loaded
        return await asyncio.to_thread(self.model, name)

    def tagger(self, name: str | None = None) -> ZeroShotTagger:
        """The zero-shot tagger of model ``name`` (its vocabulary embedded once)."""
        model = self.model(name)
        with self._lock:
            if model.name not in self._taggers:
                vocabulary = load_vocabulary(self._vocabulary_path)
                self._taggers[model.name] = ZeroShotTagger(
                    model, vocabulary, top_k=self._top_k, threshold=self._threshold
                )
            return self._taggers[model.name]
