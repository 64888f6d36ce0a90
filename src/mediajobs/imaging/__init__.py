"""Pure image operations: sniffing, validation against the site policy, decoding,
orientation, colour conversion, WebP variants, blur placeholders and EXIF. No I/O."""

from mediajobs.imaging.formats import ACCEPTED_TYPES, detect_type, normalize_type, sniff
from mediajobs.imaging.pipeline import (
    Probe,
    ProcessedImage,
    Variant,
    blur_data_url,
    fit,
    probe,
    process_image,
)
from mediajobs.imaging.policy import DEFAULT_VARIANTS, ImagePolicy, VariantSpec

__all__ = [
    "ACCEPTED_TYPES",
    "DEFAULT_VARIANTS",
    "ImagePolicy",
    "Probe",
    "ProcessedImage",
    "Variant",
    "VariantSpec",
    "blur_data_url",
    "detect_type",
    "fit",
    "normalize_type",
    "probe",
    "process_image",
    "sniff",
]
