"""Camera metadata as JSON. GPS comes back separately: it is private (stored on the row,
never written into variants or list responses)."""

from __future__ import annotations

import math
import warnings
from datetime import datetime
from typing import Any

from PIL import Image

from mediajobs.types import JSON

_EXIF_IFD = 0x8769
_GPS_IFD = 0x8825

_BASE = {0x010F: "make", 0x0110: "model"}
_DATETIME = 0x0132
_EXPOSURE_TIME = 0x829A
_F_NUMBER = 0x829D
_ISO = 0x8827
_TAKEN = 0x9003
_OFFSET = 0x9011
_FOCAL = 0x920A
_FOCAL_35 = 0xA405
_LENS_MAKE = 0xA433
_LENS_MODEL = 0xA434


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return number if math.isfinite(number) else None


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    value = value.replace("\x00", "").strip()
    return value[:200] or None


def _taken_at(value: Any, offset: Any) -> str | None:
    text = _text(value)
    if not text:
        return None
    try:
        moment = datetime.strptime(text[:19], "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None
    stamp = moment.isoformat()
    zone = _text(offset)
    if zone and len(zone) == 6 and zone[0] in "+-" and zone[3] == ":":
        stamp += zone
    return stamp


def _exposure(seconds: float) -> str:
    if seconds >= 1 or seconds <= 0:
        return f"{seconds:g}s"
    return f"1/{round(1 / seconds)}"


def _degrees(value: Any, ref: Any) -> float | None:
    try:
        d, m, s = (float(part) for part in value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    degrees = d + m / 60 + s / 3600
    if not math.isfinite(degrees):
        return None
    if _text(ref) in ("S", "W"):
        degrees = -degrees
    return round(degrees, 7)


def extract_exif(image: Image.Image) -> tuple[dict[str, JSON], dict[str, JSON] | None]:
    """``(exif, gps)``: make, model, lens, ISO, aperture, exposure, focal length and
    taken-at; and latitude/longitude/altitude when the image carries GPS."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow warns of corrupt EXIF: read as none
        try:
            exif = image.getexif()
            if not exif:
                return {}, None
            return _read(exif)
        except Exception:  # malformed EXIF never fails an upload
            return {}, None


def _read(exif: Image.Exif) -> tuple[dict[str, JSON], dict[str, JSON] | None]:
    out: dict[str, JSON] = {}
    for tag, key in _BASE.items():
        if (text := _text(exif.get(tag))) is not None:
            out[key] = text
    ifd = _ifd(exif, _EXIF_IFD)
    lens = " ".join(
        part for part in (_text(ifd.get(_LENS_MAKE)), _text(ifd.get(_LENS_MODEL))) if part
    )
    if lens:
        out["lens"] = lens
    iso = ifd.get(_ISO)
    if isinstance(iso, tuple | list):
        iso = iso[0] if iso else None
    if (number := _number(iso)) is not None:
        out["iso"] = int(number)
    if (number := _number(ifd.get(_F_NUMBER))) is not None and number > 0:
        out["aperture"] = round(number, 2)
    if (number := _number(ifd.get(_EXPOSURE_TIME))) is not None and number > 0:
        out["exposureTime"] = number
        out["exposure"] = _exposure(number)
    if (number := _number(ifd.get(_FOCAL))) is not None and number > 0:
        out["focalLength"] = round(number, 2)
    if (number := _number(ifd.get(_FOCAL_35))) is not None and number > 0:
        out["focalLength35mm"] = int(number)
    taken = _taken_at(ifd.get(_TAKEN) or exif.get(_DATETIME), ifd.get(_OFFSET))
    if taken:
        out["takenAt"] = taken
    return out, _gps(exif)


def _ifd(exif: Image.Exif, tag: int) -> dict[int, Any]:
    try:
        return dict(exif.get_ifd(tag))
    except Exception:
        return {}


def _gps(exif: Image.Exif) -> dict[str, JSON] | None:
    gps = _ifd(exif, _GPS_IFD)
    latitude = _degrees(gps.get(2), gps.get(1))
    longitude = _degrees(gps.get(4), gps.get(3))
    if latitude is None or longitude is None:
        return None
    if not (-90 <= latitude <= 90 and -180 <= longitude <= 180):
        return None
    out: dict[str, JSON] = {"latitude": latitude, "longitude": longitude}
    altitude = _number(gps.get(6))
    if altitude is not None:
        ref = gps.get(5)
        below = ref in (1, b"\x01")
        out["altitude"] = round(-altitude if below else altitude, 2)
    return out
