"""Image understanding, pure compute: CLIP embeddings of images and text (onnxruntime),
zero-shot and model-free tags, perceptual hashes. No I/O beyond loading a model directory;
the handlers fetch bytes and write rows."""

from mediajobs.vision.model import ClipModel, ModelInfo, ModelInvalid, load_clip_model
from mediajobs.vision.phash import hamming, perceptual_hash

__all__ = [
    "ClipModel",
    "ModelInfo",
    "ModelInvalid",
    "hamming",
    "load_clip_model",
    "perceptual_hash",
]
