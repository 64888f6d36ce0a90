"""Bytes in, WebP variants out. Pure: no I/O beyond the bytes given.

``probe()`` reads only the header: format, dimensions and orientation, checked against the
policy before a single pixel is decoded. ``process_image()`` then decodes once (with JPEG
shrink-on-load when the largest variant allows it), orients, converts to sRGB, and
cascades the variants from largest to smallest while a thread pool encodes each one to
WebP as soon as it is resized (Pillow releases the GIL in both).

Metadata never refuses pixels: PNG text chunks, oversized or broken profiles and chunks are
pruned before Pillow reads the file (``sources.prune_png``), and broken EXIF is ignored.
Transparency is kept however the input declares it (alpha channel, tRNS colour key or
palette alpha, premultiplied alpha), and an image with none comes out without alpha; the
colour under fully transparent pixels is bled from their neighbours before each encode
(``bleed``), so lossy WebP shows no fringe at the edge.
Colour comes from an embedded ICC profile, or else from AVIF/HEIC CICP code points
(``cicp``). No process-wide Pillow setting is changed (variants are encoded on threads).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import io
import os
import re
import threading
import warnings
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pillow_heif
from PIL import Image, ImageChops, ImageCms, ImageMath, UnidentifiedImageError

from mediajobs.errors import ImageRejected
from mediajobs.imaging.bleed import bleed_alpha
from mediajobs.imaging.cicp import cicp_from_nclx, icc_for_cicp, read_cicp
from mediajobs.imaging.exif import extract_exif
from mediajobs.imaging.formats import AVIF, HEIC, HEIF, JPEG, PNG, WEBP, detect_type
from mediajobs.imaging.policy import ImagePolicy, VariantSpec
from mediajobs.imaging.sources import (
    EOI,
    SCAN_PROBE,
    jpeg_scans_cover_every_coefficient,
    prune_png,
    read_size,
)
from mediajobs.types import JSON

pillow_heif.register_heif_opener(thumbnails=False)

# TIFF is read for catalog ingest only (``imaging.catalog``): uploads do not accept it.
TIFF = "image/tiff"

# Pillow's decompression-bomb guard stays on: its limit (Image.MAX_IMAGE_PIXELS, 89.5 MP)
# refuses a file as ``too_many_pixels`` when the policy's cap is below it anyway; a policy
# allowing more (a catalog profile) has its own cap checked from the header instead, and
# Pillow's hard limit (twice that) still refuses anything past it before a decode.
_PILLOW_FORMATS = {
    JPEG: ["JPEG", "MPO"],
    PNG: ["PNG"],
    WEBP: ["WEBP"],
    HEIC: ["HEIF"],
    HEIF: ["HEIF"],
    AVIF: ["AVIF", "HEIF"],
    TIFF: ["TIFF"],
}
_SWAPS_AXES = {5, 6, 7, 8}  # EXIF orientations that turn the image a quarter
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SRGB = ImageCms.createProfile("sRGB")
# Hamming (a one-lobe windowed sinc) for downscaling: about 41 dB PSNR against Lanczos-3 on
# photos, which the eye cannot tell apart, at half of Lanczos' cost. Resizing is a quarter
# of the CPU an image takes (WebP encoding is the rest), so this is what lets a saturated
# worker keep up with libvips, whose resampler is vectorised (see docs/benchmarks.md).
RESAMPLE = Image.Resampling.HAMMING
CASCADE_RESAMPLE = RESAMPLE  # each smaller variant from the previous one
_MAX_BLUR_BYTES = 1024
_AVIF_SIZE_LIMIT = 16384 * 16384  # libavif's AVIF_DEFAULT_IMAGE_SIZE_LIMIT, in pixels

StepCallback = Callable[[str, str | None], None]


@dataclass(frozen=True, slots=True)
class Probe:
    """What the header says: the detected type and the upright size."""

    detected_type: str
    width: int
    height: int
    stored_width: int
    stored_height: int
    orientation: int
    frames: int


@dataclass(frozen=True, slots=True)
class Variant:
    name: str
    width: int
    height: int
    data: bytes  # WebP; empty when ``same_as`` names an earlier variant of the same size
    same_as: str | None = None

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass(frozen=True, slots=True)
class ProcessedImage:
    detected_type: str
    width: int  # upright
    height: int
    source_bytes: int
    sha256: str
    has_alpha: bool
    frames: int
    variants: tuple[Variant, ...]  # in the policy's order
    blur_data_url: str
    exif: dict[str, JSON]
    gps: dict[str, JSON] | None


def _open(data: bytes, detected: str, max_pixels: int) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Corrupt EXIF data" and the like: metadata
            if max_pixels <= (Image.MAX_IMAGE_PIXELS or max_pixels):
                warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data), formats=_PILLOW_FORMATS[detected])
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageRejected("too_many_pixels", _too_many_pixels(exc, max_pixels)) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageRejected("corrupt_image", f"the image header cannot be read ({exc})") from None


def _too_many_pixels(exc: Exception, max_pixels: int) -> str:
    """Pillow's decompression-bomb refusal in our words: the image's megapixels against the
    cap (which is never above Pillow's own limit: ``catalog.CatalogProfile``); Pillow's text
    when it names no size."""
    found = re.search(r"\((\d+) pixels\) exceeds limit", str(exc))
    if found is None:
        return str(exc)
    return (
        f"the image is {int(found[1]) / 1e6:.1f} megapixels, over the cap of {max_pixels / 1e6:g}"
    )


def _refuse_oversized_container(data: bytes, detected: str, policy: ImagePolicy) -> None:
    """When the decoder refused an AVIF or HEIC, name the cause if it was the size: the
    container's own ``ispe`` size (read by libheif without decoding) over the policy's cap
    or over libavif's default image size limit (16384 x 16384 pixels,
    AVIF_DEFAULT_IMAGE_SIZE_LIMIT) raises ``too_many_pixels``."""
    size = read_size(data)
    if size is None:
        return
    pixels = size[0] * size[1]
    if pixels > policy.max_pixels or (detected == AVIF and pixels > _AVIF_SIZE_LIMIT):
        raise ImageRejected(
            "too_many_pixels",
            f"{size[0]}x{size[1]} is {pixels / 1e6:.1f} megapixels, over the "
            f"{'decoder' if pixels <= policy.max_pixels else 'policy'}'s limit",
        )


def _scale_png_colour_key(image: Image.Image, data: bytes) -> None:
    """Put a PNG's tRNS colour key on the scale of the samples Pillow decodes: Pillow
    widens 1/2/4-bit grey to 0..255 and keeps the high byte of 16-bit RGB, but leaves the
    key as written (PNG 1.2, 4.2.1.1). A 16-bit RGB key then matches on its high bytes, the
    precision Pillow decodes such files at."""
    key = image.info.get("transparency")
    depth = data[24] if len(data) > 24 else 8
    if image.mode == "L" and isinstance(key, int) and depth < 8:
        image.info["transparency"] = key * (255 // (2**depth - 1))
    elif image.mode == "RGB" and isinstance(key, tuple) and depth == 16:
        image.info["transparency"] = tuple(value >> 8 for value in key)


def _orientation(image: Image.Image) -> int:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # broken EXIF is read as no EXIF
            value = image.getexif().get(0x0112, 1)
    except Exception:
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def probe(
    data: bytes,
    policy: ImagePolicy,
    *,
    declared_type: str | None = None,
    filename: str | None = None,
    detect: Callable[[bytes, str | None, str | None], str] = detect_type,
) -> tuple[Probe, Image.Image]:
    """Check ``data`` against ``policy`` from its header alone; return the probe and the
    opened (not yet decoded) image. ``detect(data, declared_type, filename)`` names the
    type (one of ``_PILLOW_FORMATS``) or raises ``ImageRejected("unsupported_type")``:
    ``formats.detect_type`` for uploads, the catalog's own (TIFF too) for ingest. Raises
    ``ImageRejected``."""
    if not data:
        raise ImageRejected("empty_file", "the file is empty")
    if len(data) > policy.max_bytes:
        raise ImageRejected(
            "file_too_large", f"{len(data)} bytes is over the limit of {policy.max_bytes}"
        )
    detected = detect(data, declared_type, filename)
    try:
        image = _open(prune_png(data) if detected == PNG else data, detected, policy.max_pixels)
    except ImageRejected as exc:
        if exc.code == "corrupt_image" and detected in (AVIF, HEIC, HEIF):
            _refuse_oversized_container(data, detected, policy)
        raise
    if detected == PNG:
        _scale_png_colour_key(image, data)
    stored_w, stored_h = image.size
    if stored_w < 1 or stored_h < 1:
        raise ImageRejected("corrupt_image", "the image header gives no size")
    if stored_w * stored_h > policy.max_pixels:
        raise ImageRejected(
            "too_many_pixels",
            f"{stored_w}x{stored_h} is {stored_w * stored_h / 1e6:.1f} megapixels, over the "
            f"cap of {policy.max_megapixels:g}",
        )
    orientation = _orientation(image)
    width, height = (stored_h, stored_w) if orientation in _SWAPS_AXES else (stored_w, stored_h)
    if width < policy.min_width or height < policy.min_height:
        raise ImageRejected(
            "too_small",
            f"{width}x{height} is smaller than the minimum {policy.min_width}x{policy.min_height}",
        )
    aspect = width / height
    if not policy.min_aspect <= aspect <= policy.max_aspect:
        raise ImageRejected(
            "aspect_ratio_out_of_range",
            f"aspect ratio {aspect:.3f} is outside {policy.min_aspect:g}..{policy.max_aspect:g}",
        )
    frames = int(getattr(image, "n_frames", 1) or 1)
    found = Probe(detected, width, height, stored_w, stored_h, orientation, frames)
    return found, image


def fit(width: int, height: int, long_edge: int) -> tuple[int, int]:
    """The size whose long edge is ``long_edge``, keeping the aspect; never larger."""
    longest = max(width, height)
    if longest <= long_edge:
        return width, height
    scale = long_edge / longest
    return max(1, round(width * scale)), max(1, round(height * scale))


def _decode(image: Image.Image, found: Probe, largest: int, data: bytes) -> Image.Image:
    """Load the first frame, with JPEG shrink-on-load when the largest variant is at most
    half the stored size (the DCT scales by 1/2, 1/4 or 1/8 and never below the request).
    A JPEG that ends before its EOI marker goes to ``_decode_jpeg_without_eoi``; any other
    file that ends before its pixel data does (PNG with IDAT cut short, ...) is corrupt.
    A PNG needs no such rule: Pillow accepts one whose IDAT data holds every row even when
    the CRC or IEND after it is missing."""
    try:
        if image.format in ("JPEG", "MPO"):
            _jpeg_draft(image, found, largest)
        if found.frames > 1:
            image.seek(0)
        try:
            image.load()
        except OSError as exc:
            if image.format not in ("JPEG", "MPO") or "truncated" not in str(exc):
                raise
            image = _decode_jpeg_without_eoi(data, found, largest)
        if image.format in ("JPEG", "MPO") and image.mode == "CMYK" and "adobe" not in image.info:
            # Pillow reads every CMYK JPEG with Adobe's inverted polarity; without the
            # Adobe marker the samples are plain CMYK, so undo that inversion.
            image = ImageChops.invert(image)
    except Image.DecompressionBombError as exc:
        raise ImageRejected("too_many_pixels", str(exc)) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageRejected("corrupt_image", f"the image cannot be decoded ({exc})") from None
    return image


def _jpeg_draft(image: Image.Image, found: Probe, largest: int) -> None:
    want = fit(found.stored_width, found.stored_height, largest)
    if want[0] * 2 <= found.stored_width:
        image.draft(image.mode, want)


def _decode_jpeg_without_eoi(data: bytes, found: Probe, largest: int) -> Image.Image:
    """A JPEG whose data ends before its EOI marker: accepted when its scans are complete
    and only the marker (or less than one byte of padding) is missing, refused as
    ``corrupt_image`` when it is cut short, however little is missing.

    The rule, exact rather than a threshold: (1) the scans the file starts cover every
    component's 64 coefficients at full precision (no progressive or non-interleaved scan
    is missing); (2) no MCU of the last scan needs a bit past the end of the file. For (2)
    the bytes are decoded twice, once followed by EOI (libjpeg then supplies zero bits, and
    grey for whole MCUs, which is what Pillow's LOAD_TRUNCATED_IMAGES shows) and once by
    one bits and noise before EOI (``SCAN_PROBE``); complete scan data never reaches
    either, so the two decodes are identical, while any MCU that needed the missing bytes
    decodes differently. A plain grey or dark photo cannot pass for complete: the noise
    decodes to non-flat blocks. Costs two extra decodes, only for files without EOI;
    Pillow's process-wide LOAD_TRUNCATED_IMAGES is never set (the marker is appended here).
    """
    if not jpeg_scans_cover_every_coefficient(data):
        raise ImageRejected("corrupt_image", "the JPEG is cut short (scans are missing)")
    decodes = []
    for tail in (EOI, SCAN_PROBE + EOI):
        image = Image.open(io.BytesIO(data + tail), formats=["JPEG", "MPO"])
        _jpeg_draft(image, found, largest)
        image.load()
        decodes.append(image)
    complete, probed = decodes
    if ImageChops.difference(complete, probed).getbbox() is not None:
        raise ImageRejected("corrupt_image", "the JPEG is cut short (its last scan is incomplete)")
    return complete


def _to_srgb(image: Image.Image, data: bytes = b"") -> Image.Image:
    """RGB, RGBA or L in sRGB, whatever came in (CMYK, 16-bit, palette, grey+alpha...).

    Transparency survives in every form an input declares it: an alpha channel (LA, PA,
    RGBA, 16-bit alpha, read by Pillow as 8-bit), premultiplied alpha (La, RGBa:
    un-premultiplied), a tRNS colour key in grey (1, 2, 4, 8 or 16 bits) or RGB images, and
    palette alpha (a tRNS table or a single transparent index). The output is RGBA then,
    unless every pixel is opaque: an opaque image comes out RGB or L, without alpha.
    ``data`` (the source bytes) is read for AVIF's CICP code points."""
    icc = image.info.get("icc_profile")
    signalled = None if icc else _cicp_profile(image, data)
    image = _with_alpha_or_opaque(image)
    if signalled:
        icc = signalled
        if image.mode == "L":  # a grey AVIF in PQ, say: its curve applies all the same
            image = image.convert("RGB")
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        image, mode = _sixteen_to_eight(image), "L"
    elif mode == "1":
        image, mode = image.convert("L"), "L"
    elif mode not in ("RGB", "RGBA", "L", "CMYK"):
        image, mode = image.convert("RGB"), "RGB"
    if icc and mode in ("RGB", "RGBA", "CMYK"):
        converted = _icc_to_srgb(image, icc)
        if converted is not None:
            return converted
    if mode == "CMYK":
        return image.convert("RGB")
    return image


def _sixteen_to_eight(image: Image.Image) -> Image.Image:
    if image.mode != "I":
        image = image.convert("I")
    return image.point(lambda v: v * (1 / 256)).convert("L")


def _with_alpha_or_opaque(image: Image.Image) -> Image.Image:
    """``image`` as RGBA when any pixel is less than opaque, else without its transparency
    (the same mode, or RGB for an opaque palette or alpha image)."""
    mode = image.mode
    key = image.info.get("transparency")
    if mode in ("La", "RGBa"):
        bands = image.split()
        rgb = bands[:1] * 3 if mode == "La" else bands[:3]
        image = Image.merge("RGBa", (*rgb, bands[-1])).convert("RGBA")
    elif mode in ("LA", "PA") or (mode == "P" and key is not None):
        image = image.convert("RGBA")
    elif mode in ("1", "L", "RGB") and key is not None:
        image = image.convert("RGBA")  # Pillow turns the colour key into alpha
    elif mode.startswith("I") and isinstance(key, int):
        # A 16-bit grey key: compare at 16 bits, before the samples are cut to 8.
        opaque = ImageMath.lambda_eval(
            lambda a: a["convert"]((a["image"] != key) * 255, "L"),
            image=image.convert("I"),
        )
        image = _sixteen_to_eight(image).convert("RGBA")
        image.putalpha(opaque)
    elif mode == "P":
        image = image.convert("RGB")
    if image.mode != "RGBA":
        image.info.pop("transparency", None)
        return image
    low, _high = image.getchannel("A").getextrema()
    if low == 255:
        return image.convert("RGB")
    return image


def _cicp_profile(image: Image.Image, data: bytes) -> bytes | None:
    """An ICC profile for the CICP code points of an AVIF or HEIC without ICC profile."""
    if image.format == "HEIF":
        cicp = cicp_from_nclx(image.info.get("nclx_profile"))
    elif image.format == "AVIF" and data:
        cicp = read_cicp(data)
    else:
        return None
    return icc_for_cicp(cicp) if cicp is not None else None


def _icc_to_srgb(image: Image.Image, icc: bytes) -> Image.Image | None:
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
    except (ImageCms.PyCMSError, OSError, TypeError):
        return None  # a broken profile: fall back to treating the pixels as sRGB
    description = (ImageCms.getProfileDescription(source) or "").strip().lower()
    if image.mode != "CMYK" and description.startswith("srgb"):
        return None  # already sRGB
    alpha = image.getchannel("A") if image.mode == "RGBA" else None
    base = image.convert("RGB") if image.mode == "RGBA" else image
    try:
        converted = ImageCms.profileToProfile(
            base, source, _SRGB, outputMode="RGB", renderingIntent=ImageCms.Intent.PERCEPTUAL
        )
    except ImageCms.PyCMSError:
        return None
    assert converted is not None
    if alpha is not None:
        converted.putalpha(alpha)
    return converted


def _clean(image: Image.Image) -> Image.Image:
    image.info.clear()  # no EXIF, XMP or ICC travels into a variant
    return image


def _encode(image: Image.Image, quality: int, method: int) -> bytes:
    """``image`` as lossy WebP. An RGBA image is alpha-bled first (``bleed.bleed_alpha``),
    so the colour under its alpha-0 pixels cannot fringe the visible edge; libwebp's
    ``exact`` stays off (Pillow's default), leaving it free to flatten invisible pixels."""
    image = bleed_alpha(image)
    buffer = io.BytesIO()
    image.save(buffer, "WEBP", quality=quality, method=method, exif=b"", xmp=b"", icc_profile=None)
    return buffer.getvalue()


def blur_data_url(image: Image.Image, long_edge: int) -> str:
    """A tiny WebP as a data URL (at most 1 KB) for placeholders: smaller and coarser until
    it fits."""
    url = ""
    for edge, quality in ((long_edge, 40), (long_edge, 20), (max(4, long_edge // 2), 10)):
        small = _clean(image.resize(fit(*image.size, edge), Image.Resampling.BILINEAR))
        url = "data:image/webp;base64," + base64.b64encode(_encode(small, quality, 4)).decode()
        if len(url) <= _MAX_BLUR_BYTES:
            break
    return url


def _report_variant(report: StepCallback, name: str, future: Future[bytes]) -> None:
    if not future.cancelled() and future.exception() is None:
        report("variant", name)


class _Inline:
    """An executor that runs each call at once (one thread per image: no hand-offs)."""

    def submit(self, fn: Callable[..., bytes], *args: Any) -> Future[bytes]:
        future: Future[bytes] = Future()
        try:
            future.set_result(fn(*args))
        except BaseException as exc:
            future.set_exception(exc)
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        pass


def _threads() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def process_image(
    data: bytes,
    policy: ImagePolicy,
    *,
    declared_type: str | None = None,
    filename: str | None = None,
    on_step: StepCallback | None = None,
    threads: int | None = None,
) -> ProcessedImage:
    """Validate, decode, orient, convert and encode every variant. ``on_step(step, name)`` is
    called with ``("decoded", None)`` and then ``("variant", name)`` as each one is done.
    Raises ``ImageRejected``."""
    step = on_step or (lambda _step, _name: None)
    lock = threading.Lock()

    def report(what: str, name: str | None) -> None:  # encode threads report too
        with lock:
            step(what, name)

    found, image = probe(data, policy, declared_type=declared_type, filename=filename)
    exif, gps = extract_exif(image)
    ordered = policy.ordered_variants()
    decoded = _decode(image, found, ordered[0].size, data)
    current = _to_srgb(decoded, data)
    has_alpha = current.mode == "RGBA"
    del image, decoded  # the full-size decode goes as soon as the first variant is made
    report("decoded", None)

    workers = threads or _threads()
    pool: ThreadPoolExecutor | _Inline = (
        _Inline() if workers == 1 else ThreadPoolExecutor(workers, thread_name_prefix="webp")
    )
    pending: dict[str, tuple[int, int, Future[bytes] | None, str | None]] = {}
    try:
        first = True
        previous: tuple[str, tuple[int, int]] | None = None
        for spec in ordered:
            target = fit(found.width, found.height, spec.size)
            if previous is not None and previous[1] == target:
                pending[spec.name] = (*target, None, previous[0])
                continue
            current = _resize_to(current, target, first, found.orientation)
            first = False
            job = pool.submit(_encode, _clean(current), policy.quality, policy.method)
            job.add_done_callback(functools.partial(_report_variant, report, spec.name))
            pending[spec.name] = (*target, job, None)
            previous = (spec.name, target)
        blur = blur_data_url(current, policy.blur_size)
        variants = _collect(policy.variants, pending, report)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return ProcessedImage(
        detected_type=found.detected_type,
        width=found.width,
        height=found.height,
        source_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        has_alpha=has_alpha,
        frames=found.frames,
        variants=variants,
        blur_data_url=blur,
        exif=exif,
        gps=gps,
    )


def _resize_to(
    image: Image.Image, upright_target: tuple[int, int], first: bool, orientation: int
) -> Image.Image:
    """Resize to the upright target. The first resize (from the decode) also applies the
    EXIF orientation, on its smaller result, which is cheaper than turning the full-size
    decode; later ones cascade from the previous, already filtered, variant."""
    if not first:
        if image.size == upright_target:
            return image
        return image.resize(upright_target, CASCADE_RESAMPLE, reducing_gap=3.0)
    swaps = orientation in _SWAPS_AXES
    stored = upright_target[::-1] if swaps else upright_target
    if image.size != stored:
        image = image.resize(stored, RESAMPLE, reducing_gap=3.0)
    return image if orientation == 1 else image.transpose(_TRANSPOSE[orientation])


def _collect(
    specs: tuple[VariantSpec, ...],
    pending: dict[str, tuple[int, int, Future[bytes] | None, str | None]],
    step: StepCallback,
) -> tuple[Variant, ...]:
    """The variants in the policy's order; those sharing a larger one's object are reported
    here (the encoded ones were reported as each encode finished)."""
    done: dict[str, Variant] = {}
    for name, (width, height, future, _same) in pending.items():
        if future is not None:
            done[name] = Variant(name, width, height, future.result())
    for name, (width, height, future, same_as) in pending.items():
        if future is None and same_as is not None:
            done[name] = Variant(name, width, height, b"", same_as)
            step("variant", name)
    return tuple(done[spec.name] for spec in specs)
