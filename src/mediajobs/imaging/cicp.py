"""Colour signalled by CICP (ITU-T H.273 code points, carried in an ``nclx`` colour box by
AVIF and HEIC) instead of an ICC profile, turned into an ICC profile so that the pipeline
converts it to sRGB exactly as it converts an embedded profile.

The profile is a matrix/TRC (ICC.1 "matrix-shaper") RGB profile: three tone curves and the
primaries as D50 colorants. Code points whose meaning is sRGB's (BT.709 primaries with the
sRGB or BT.709-family transfer, or "unspecified") need no conversion and give ``None``.

PQ and HLG are high-dynamic-range transfers; an sRGB variant cannot show them, so they are
tone-mapped into the curves (see ``_tone_map``): nothing is clipped or crushed, highlights
are compressed.
"""

from __future__ import annotations

import io
import math
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pillow_heif

# ITU-T H.273 (07/2024) table 2, ColourPrimaries: (red, green, blue, white) as CIE 1931 xy.
_D65 = (0.3127, 0.3290)
_PRIMARIES: dict[int, tuple[tuple[float, float], ...]] = {
    1: ((0.640, 0.330), (0.300, 0.600), (0.150, 0.060), _D65),  # BT.709 = sRGB
    4: ((0.67, 0.33), (0.21, 0.71), (0.14, 0.08), (0.310, 0.316)),  # BT.470 System M, C
    5: ((0.64, 0.33), (0.29, 0.60), (0.15, 0.06), _D65),  # BT.601 625-line
    6: ((0.630, 0.340), (0.310, 0.595), (0.155, 0.070), _D65),  # BT.601 525 / SMPTE 170M
    7: ((0.630, 0.340), (0.310, 0.595), (0.155, 0.070), _D65),  # SMPTE 240M
    9: ((0.708, 0.292), (0.170, 0.797), (0.131, 0.046), _D65),  # BT.2020 / BT.2100
    11: ((0.680, 0.320), (0.265, 0.690), (0.150, 0.060), (0.314, 0.351)),  # SMPTE RP 431-2
    12: ((0.680, 0.320), (0.265, 0.690), (0.150, 0.060), _D65),  # SMPTE EG 432-1 Display P3
    22: ((0.630, 0.340), (0.295, 0.605), (0.155, 0.077), _D65),  # EBU Tech. 3213-E
}
_SRGB_PRIMARIES = {1, 2}  # 2 = unspecified: read as sRGB, as browsers do
# H.273 table 3, TransferCharacteristics. BT.709, BT.601 and BT.2020 (1, 6, 14, 15) define
# a camera OETF, not a display EOTF; like Chromium (gfx::ColorSpace, "use the same transfer
# function as sRGB ... to more closely match other media players") we display them with
# the sRGB curve, so BT.709-tagged photos look as they do in a browser.
_SRGB_TRANSFERS = {1, 2, 6, 13, 14, 15}
_LINEAR, _GAMMA22, _GAMMA28, _PQ, _HLG = 8, 4, 5, 16, 18
# ICC.1:2022 7.2.16: the PCS illuminant D50, as XYZ.
_D50_XYZ = (0.9642, 1.0, 0.8249)
# The linear Bradford cone response (Lam 1985), as used by ICC.1 Annex E for adaptation.
_BRADFORD: Matrix = (
    (0.8951, 0.2664, -0.1614),
    (-0.7502, 1.7135, 0.0367),
    (0.0389, -0.0685, 1.0296),
)

# SMPTE ST 2084:2014 (= ITU-R BT.2100-2 table 4) PQ constants.
_PQ_M1 = 2610 / 16384
_PQ_M2 = 2523 / 4096 * 128
_PQ_C1 = 3424 / 4096
_PQ_C2 = 2413 / 4096 * 32
_PQ_C3 = 2392 / 4096 * 32
# ARIB STD-B67 (= ITU-R BT.2100-2 table 5) HLG constants; system gamma 1.2 at a nominal
# 1000 cd/m2 display (BT.2100 note 5e).
_HLG_A = 0.17883277
_HLG_B = 1 - 4 * _HLG_A
_HLG_C = 0.5 - _HLG_A * math.log(4 * _HLG_A)
_HLG_PEAK = 1000.0
_HLG_GAMMA = 1.2
# ITU-R BT.2408-7: HDR reference (graphics) white is 203 cd/m2; it becomes relative 1.0.
_REFERENCE_WHITE = 203.0
_KNEE = 0.8  # relative light below this passes unchanged; above it rolls off towards 1.0
_TABLE_SIZE = 4096

Vector = tuple[float, float, float]
Matrix = tuple[Vector, Vector, Vector]


@dataclass(frozen=True, slots=True)
class Cicp:
    """H.273 code points: colour primaries, transfer characteristics, matrix coefficients."""

    primaries: int
    transfer: int
    matrix: int

    @property
    def is_srgb(self) -> bool:
        """True when the pixels need no conversion to be sRGB (or nothing is known)."""
        primaries_ok = self.primaries in _SRGB_PRIMARIES or self.primaries not in _PRIMARIES
        return primaries_ok and (self.transfer in _SRGB_TRANSFERS or not _known(self.transfer))


def _known(transfer: int) -> bool:
    return transfer in (_LINEAR, _GAMMA22, _GAMMA28, _PQ, _HLG) or transfer in _SRGB_TRANSFERS


def cicp_from_nclx(nclx: Mapping[str, Any] | None) -> Cicp | None:
    """The code points of pillow-heif's ``info["nclx_profile"]`` dict, or None."""
    if not nclx:
        return None
    try:
        return Cicp(
            int(nclx["color_primaries"]),
            int(nclx["transfer_characteristics"]),
            int(nclx["matrix_coefficients"]),
        )
    except (KeyError, TypeError, ValueError):
        return None


def read_cicp(data: bytes) -> Cicp | None:
    """The primary image's nclx code points in an AVIF or HEIF container (read by libheif
    through pillow-heif, which parses the boxes without decoding), or None when the file
    has none or cannot be parsed. Used for AVIF, whose Pillow decoder does not expose it."""
    try:
        heif = pillow_heif.open_heif(io.BytesIO(data), convert_hdr_to_8bit=True)
        return cicp_from_nclx(heif.info.get("nclx_profile"))
    except Exception:  # any parse failure: no colour information, treated as sRGB
        return None


def icc_for_cicp(cicp: Cicp) -> bytes | None:
    """An ICC v2 matrix/TRC RGB profile equivalent to ``cicp``, or None when the code points
    mean sRGB (or are unknown, in which case the pixels are read as sRGB)."""
    if cicp.is_srgb:
        return None
    chromaticities = _PRIMARIES.get(cicp.primaries, _PRIMARIES[1])
    colorants = _adapt_to_d50(_rgb_to_xyz(chromaticities), chromaticities[3])
    curve = _curve(cicp.transfer)
    description = f"CICP {cicp.primaries}/{cicp.transfer}/{cicp.matrix}".encode() + b"\0"
    tags = [
        (b"desc", _text_description(description)),
        (b"wtpt", _xyz(*_D50_XYZ)),
        (b"rXYZ", _xyz(*(row[0] for row in colorants))),
        (b"gXYZ", _xyz(*(row[1] for row in colorants))),
        (b"bXYZ", _xyz(*(row[2] for row in colorants))),
        (b"rTRC", curve),
        (b"gTRC", curve),
        (b"bTRC", curve),
        (b"cprt", b"text\0\0\0\0no copyright, use freely\0"),
    ]
    return _profile(tags)


def _rgb_to_xyz(chromaticities: tuple[tuple[float, float], ...]) -> Matrix:
    """The RGB -> XYZ matrix of the primaries and white point, white at Y = 1 (SMPTE RP
    177-1993, section 3.3)."""
    red, green, blue = (_xyz_of(xy) for xy in chromaticities[:3])
    primaries = _transpose((red, green, blue))  # the columns are the primaries' XYZ
    scale = _apply(_inverse(primaries), _xyz_of(chromaticities[3]))
    return _matrix(lambda r, c: primaries[r][c] * scale[c])


def _adapt_to_d50(matrix: Matrix, white_xy: tuple[float, float]) -> Matrix:
    """``matrix`` chromatically adapted from its white point to D50 with the linear
    Bradford transform (ICC.1:2022 Annex E)."""
    source = _apply(_BRADFORD, _xyz_of(white_xy))
    target = _apply(_BRADFORD, _D50_XYZ)
    gain = _matrix(lambda r, c: target[r] / source[r] if r == c else 0.0)
    adapt = _multiply(_inverse(_BRADFORD), _multiply(gain, _BRADFORD))
    return _multiply(adapt, matrix)


def _curve(transfer: int) -> bytes:
    if transfer == _LINEAR:
        return b"curv\0\0\0\0" + struct.pack(">I", 0)  # identity
    if transfer in (_GAMMA22, _GAMMA28):
        gamma = 2.2 if transfer == _GAMMA22 else 2.8
        return b"curv\0\0\0\0" + struct.pack(">IH", 1, round(gamma * 256)) + b"\0\0"
    if transfer in (_PQ, _HLG):
        eotf = _pq_relative if transfer == _PQ else _hlg_relative
        return _table(lambda v: _tone_map(eotf(v)))
    # IEC 61966-2-1 sRGB as an ICC parametric curve (function type 3).
    params = (2.4, 1 / 1.055, 0.055 / 1.055, 1 / 12.92, 0.04045)
    return b"para\0\0\0\0" + struct.pack(">HH", 3, 0) + b"".join(_s15(p) for p in params)


def _pq_relative(signal: float) -> float:
    """PQ (SMPTE ST 2084) signal 0..1 -> display light relative to reference white."""
    p = signal ** (1 / _PQ_M2)
    luminance = 10000 * (max(p - _PQ_C1, 0.0) / (_PQ_C2 - _PQ_C3 * p)) ** (1 / _PQ_M1)
    return float(luminance) / _REFERENCE_WHITE


def _hlg_relative(signal: float) -> float:
    """HLG (ARIB STD-B67) signal 0..1 -> display light relative to reference white: the
    inverse OETF of BT.2100, then its OOTF on a 1000 cd/m2 display applied per channel
    (a simplification of the luminance-based OOTF that keeps each channel monotonic)."""
    if signal <= 0.5:
        scene = signal * signal / 3
    else:
        scene = (math.exp((signal - _HLG_C) / _HLG_A) + _HLG_B) / 12
    return _HLG_PEAK * float(scene**_HLG_GAMMA) / _REFERENCE_WHITE


def _tone_map(relative: float) -> float:
    """Relative light (1.0 = BT.2408 reference white) into 0..1 for an SDR display:
    unchanged up to the knee (0.8), then ``k + (1-k) t / (t + 1-k)`` with ``t = x - k``,
    which meets the identity with slope 1 at the knee and approaches 1.0 without reaching
    it, so highlights up to 10 000 cd/m2 stay distinct instead of clipping."""
    if relative <= _KNEE:
        return max(relative, 0.0)
    excess = relative - _KNEE
    return _KNEE + (1 - _KNEE) * excess / (excess + 1 - _KNEE)


def _table(function: Callable[[float], float]) -> bytes:
    values = (
        min(65535, max(0, round(function(i / (_TABLE_SIZE - 1)) * 65535)))
        for i in range(_TABLE_SIZE)
    )
    return b"curv\0\0\0\0" + struct.pack(f">I{_TABLE_SIZE}H", _TABLE_SIZE, *values)


def _s15(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))  # ICC s15Fixed16Number


def _xyz(x: float, y: float, z: float) -> bytes:
    return b"XYZ \0\0\0\0" + _s15(x) + _s15(y) + _s15(z)


def _text_description(ascii_z: bytes) -> bytes:
    # ICC.1:2001 textDescriptionType: ASCII, then empty Unicode and ScriptCode parts.
    return b"desc\0\0\0\0" + struct.pack(">I", len(ascii_z)) + ascii_z + b"\0" * 78


def _profile(tags: list[tuple[bytes, bytes]]) -> bytes:
    offset = 128 + 4 + 12 * len(tags)
    table, body = b"", b""
    for signature, data in tags:
        data += b"\0" * (-len(data) % 4)
        table += signature + struct.pack(">II", offset + len(body), len(data))
        body += data
    header = (
        struct.pack(">I", offset + len(body))
        + b"\0\0\0\0"
        + struct.pack(">I", 0x02100000)  # version 2.1
        + b"mntrRGB XYZ "
        + struct.pack(">6H", 2024, 1, 1, 0, 0, 0)
        + b"acsp"
        + b"\0" * 24
        + struct.pack(">I", 0)  # perceptual
        + _xyz(*_D50_XYZ)[8:]
        + b"\0" * 48
    )
    return header + struct.pack(">I", len(tags)) + table + body


def _apply(m: Matrix, v: tuple[float, float, float]) -> tuple[float, float, float]:
    return (
        m[0][0] * v[0] + m[0][1] * v[1] + m[0][2] * v[2],
        m[1][0] * v[0] + m[1][1] * v[1] + m[1][2] * v[2],
        m[2][0] * v[0] + m[2][1] * v[1] + m[2][2] * v[2],
    )


def _xyz_of(xy: tuple[float, float]) -> Vector:
    x, y = xy
    return (x / y, 1.0, (1 - x - y) / y)


def _matrix(cell: Callable[[int, int], float]) -> Matrix:
    def row(r: int) -> Vector:
        return (cell(r, 0), cell(r, 1), cell(r, 2))

    return (row(0), row(1), row(2))


def _transpose(m: Matrix) -> Matrix:
    return _matrix(lambda r, c: m[c][r])


def _multiply(a: Matrix, b: Matrix) -> Matrix:
    return _matrix(lambda r, c: sum(a[r][k] * b[k][c] for k in range(3)))


def _inverse(m: Matrix) -> Matrix:
    (a, b, c), (d, e, f), (g, h, i) = m
    det = a * (e * i - f * h) - b * (d * i - f * g) + c * (d * h - e * g)
    return (
        ((e * i - f * h) / det, (c * h - b * i) / det, (b * f - c * e) / det),
        ((f * g - d * i) / det, (a * i - c * g) / det, (c * d - a * f) / det),
        ((d * h - e * g) / det, (b * g - a * h) / det, (a * e - b * d) / det),
    )
