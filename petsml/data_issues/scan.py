"""One pass over the decoded cache for every pixel-level finding: blur, brightness, pHash.

The decoded cache holds each photo once at ``decode.size`` square; reading it and turning it
into luminance is most of what these measures cost, so each batch is read and converted once
and every measure runs on that (the near-duplicate hash used to decode each original JPEG
again: on 1,036 photos that was most of the stage's time).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from petsml.data_issues import phash, quality

BATCH = 32  # decoded photos in memory at once (32 x 256 x 256 x 3 bytes: 6 MiB)


def scan(
    pixels: Callable[[slice], np.ndarray], n: int, short_side: np.ndarray
) -> tuple[quality.Quality, phash.Hashes]:
    """Blur and brightness (with ``short_side``, the original photos' short sides) and the
    pHash of ``n`` decoded photos (``pixels(slice)`` -> (B, S, S, 3) uint8)."""
    blur, brightness = np.empty(n), np.empty(n)
    hashes = phash.Hashes.empty(n)
    for start in range(0, n, BATCH):
        part = slice(start, min(start + BATCH, n))
        grey = quality.luminance(pixels(part))
        blur[part] = quality.blur_effect(grey)
        brightness[part] = quality.brightness(grey)
        hashes.fill(part, phash.hash_grey(grey))
    measured = quality.Quality(blur, brightness, np.asarray(short_side, dtype=np.int64))
    return measured, hashes
