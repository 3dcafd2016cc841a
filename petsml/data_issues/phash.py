"""The perceptual hash that confirms a near-duplicate: pHash, mirror-invariant.

Embedding similarity alone cannot tell a copy from a look-alike: two photos of the same white
Samoyed on grass sit as close in a classifier's feature space as a photo and its resized copy.
A perceptual hash looks at the photo's own layout instead. pHash (Zauner 2010, as ``imagehash``
computes it): the greyscale photo at 32x32, its 2-D DCT, the 8x8 lowest frequencies, each bit
"above the median of those 64".

The photo hashed is the decoded cache's square (short side to ``decode.size``, centre crop:
what every model sees), already in memory for the blur and brightness measures, so no JPEG is
read again; it is shrunk to 32x32 with Lanczos weights, one matrix product per batch. A copy's
square is the same centre crop of the same scene. On the 372 real photos of the shipped sample
at 256 px, resizing and re-encoding move 0-2 bits of 64, mirroring (against the mirror hash)
0-4, a 10 % crop 2-16 and all four edits at once 2-18 (median 10); unrelated photos differ in
~30 (each bit a coin flip), and look-alikes rarely come within 16 (29 of 68,906 pairs, the
closest 14).

A mirrored copy flips the sign of every odd horizontal frequency, so the mirror image's hash
comes from the same DCT at no cost (:func:`hash_grey` returns both), and
:func:`mirror_distance` compares a photo with the other photo and with its mirror image.

A hash fingerprints a photo's layout only when the photo has one: when less than
:data:`MIN_LOW_SHARE` (a quarter) of the thumbnail's variation lies in the 8x8 frequencies the
hash keeps, its bits are set by texture and noise, and two such photos (fine stripes of one
colour, a flat wall) can agree by accident in 8 of 64 bits. Such a hash is marked
uninformative and confirms nothing. Natural photos keep most of their variation in low
frequencies (real pets at 256 px: 0.39-0.94, median 0.78); fine generated stripes 0.01-0.05.
Stripes coarse enough to land in the hashed frequencies are a layout, though: two such photos
of one pattern hash alike, as two photos of one striped blanket would.

dHash (the sign of horizontal gradients on 9x8 pixels) was measured too: it matches a copy as
well, but unrelated photos come closer to each other (down to 7 bits on 372 real pets, pHash
14), so pHash is the one used.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image
from scipy.fft import dctn

SIDE = 32  # the greyscale thumbnail the DCT runs on
LOW = 8  # the lowest LOW x LOW frequencies make the hash
BITS = LOW * LOW
MIN_LOW_SHARE = 0.25  # of the thumbnail's variation (DC aside) in those frequencies: informative
# a horizontal mirror flips the sign of the coefficients of odd horizontal frequency
_MIRROR = np.where(np.arange(LOW) % 2, -1.0, 1.0)[None, None, :]


@dataclass(frozen=True)
class PHash:
    """A photo's 64-bit pHash, its mirror image's, and whether they fingerprint anything."""

    bits: np.ndarray
    mirrored: np.ndarray
    low_share: float  # share of the thumbnail's variation (DC aside) in the hashed frequencies

    @property
    def informative(self) -> bool:
        return self.low_share >= MIN_LOW_SHARE


@dataclass(frozen=True)
class Hashes:
    """The hashes of many photos, row-aligned: ``hashes[row]`` is one :class:`PHash`."""

    bits: np.ndarray  # (n, BITS) bool
    mirrored: np.ndarray  # (n, BITS) bool
    low_share: np.ndarray  # (n,)

    def __len__(self) -> int:
        return len(self.bits)

    def __getitem__(self, row: int) -> PHash:
        return PHash(self.bits[row], self.mirrored[row], float(self.low_share[row]))

    @classmethod
    def empty(cls, n: int) -> Hashes:
        return cls(np.zeros((n, BITS), bool), np.zeros((n, BITS), bool), np.zeros(n))

    def fill(self, part: slice, other: Hashes) -> None:
        """Write ``other``'s rows into ``part`` of these arrays."""
        self.bits[part], self.mirrored[part] = other.bits, other.mirrored
        self.low_share[part] = other.low_share


@lru_cache(maxsize=8)
def _shrink(length: int) -> np.ndarray:
    """(SIDE, length): Lanczos-3 resampling weights (as PIL's ``LANCZOS`` shrinks: the kernel
    stretched by the shrink factor, so it low-passes first), making the thumbnail one matrix
    product for any size. A plain area mean would not do: fine stripes alias into the low
    frequencies the hash keeps and two striped photos then agree on their moire."""
    scale = max(length / SIDE, 1.0)
    centres = (np.arange(SIDE) + 0.5) * (length / SIDE)
    offsets = (np.arange(length)[None, :] + 0.5 - centres[:, None]) / scale
    weights = np.sinc(offsets) * np.sinc(offsets / 3.0) * (np.abs(offsets) < 3.0)
    return (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)


def _bits(coefficients: np.ndarray) -> np.ndarray:
    flat = coefficients.reshape(len(coefficients), -1)
    return flat > np.median(flat, axis=1, keepdims=True)


def hash_grey(grey: np.ndarray) -> Hashes:
    """The pHash of each greyscale photo in ``grey`` (B, H, W) and of its mirror image."""
    grey = np.asarray(grey, dtype=np.float32)
    thumbs = _shrink(grey.shape[1]) @ grey @ _shrink(grey.shape[2]).T
    spectrum = dctn(thumbs.astype(np.float64), axes=(1, 2), norm="ortho")
    energy = spectrum**2
    energy[:, 0, 0] = 0.0  # the mean brightness is no layout
    total = energy.sum(axis=(1, 2))
    low_energy = energy[:, :LOW, :LOW].sum(axis=(1, 2))
    share = np.divide(low_energy, total, out=np.zeros_like(total), where=total > 0)
    low = spectrum[:, :LOW, :LOW]
    return Hashes(_bits(low), _bits(low * _MIRROR), share)


def hash_image(image: Image.Image) -> PHash:
    """:func:`hash_grey` of one picture (its luma, as PIL converts it)."""
    return hash_grey(np.asarray(image.convert("L"), dtype=np.float64)[None])[0]


def mirror_distances(
    bits: np.ndarray, other_bits: np.ndarray, other_mirrored: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Row by row: bits between a hash and another photo's, the other taken as it is or
    mirrored (whichever is closer); and whether the mirror image was the closer one."""
    plain = np.count_nonzero(bits != other_bits, axis=-1)
    mirrored = np.count_nonzero(bits != other_mirrored, axis=-1)
    return np.minimum(plain, mirrored), mirrored < plain


def mirror_distance(first: PHash, second: PHash) -> tuple[int, bool]:
    """:func:`mirror_distances` of two photos."""
    bits, mirrored = mirror_distances(first.bits, second.bits, second.mirrored)
    return int(bits), bool(mirrored)
