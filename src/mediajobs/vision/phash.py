"""Perceptual hashes for near-duplicates: a resized, re-encoded or lightly edited copy of a
photo hashes within a few bits of the original, where its sha256 shares nothing.

The hash is imagehash's ``phash`` (Zauner 2010, "Implementation and Benchmarking of
Perceptual Image Hash Functions"): the image at 32 x 32 greys, its 2-D DCT, and one bit per
coefficient of the 8 x 8 lowest frequencies, set when it is above their median. 64 bits,
stored as a signed ``bigint``; copies differ by a Hamming distance of a few bits, unrelated
photos by about 32.
"""

from __future__ import annotations

import imagehash
from PIL import Image

HASH_BITS = 64
# At most this many differing bits make two images near-duplicates. imagehash's own docs
# treat distances under ~10 as similar; 8 keeps a 50% resize and a q=60 re-encode of a photo
# (0-4 bits in the tests) while unrelated photos (about 32 bits apart) stay far out.
NEAR_DUPLICATE_BITS = 8
_MASK = (1 << HASH_BITS) - 1


def perceptual_hash(image: Image.Image) -> int:
    """The 64-bit DCT hash of ``image`` as a signed integer (Postgres ``bigint``)."""
    if image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    bits = imagehash.phash(image, hash_size=8).hash.flatten()
    value = 0
    for bit in bits:
        value = (value << 1) | int(bit)
    return value - (1 << HASH_BITS) if value >> (HASH_BITS - 1) else value


def hamming(a: int, b: int) -> int:
    """The number of bits in which two hashes differ (0-64)."""
    return ((a ^ b) & _MASK).bit_count()
