"""Image quality: blurry, dark, tiny - measured on the decoded cache, judged on fixed scales.

The decoded cache holds every photo once at ``decode.size`` square (what every model sees),
so blur and brightness are measured at one scale whatever the original size, with no JPEG
decoded again. Each rule is on an absolute scale with a stated meaning, never relative to the
data set, so a data set that is all blurry is all reported:

- **blurry**: the blur effect of Crete-Roffet et al. ("The blur effect: perception and
  estimation with a new no-reference perceptual blur metric", SPIE 2007; scikit-image's
  ``blur_effect``): the share of the photo's neighbour-to-neighbour contrast that survives
  re-blurring it with an 11-pixel box. A sharp photo loses most of it (real pets at 256 px:
  0.2-0.5), an out-of-focus one little (a Gaussian blur of sigma 2 px: 0.56-0.67). Above
  ``data_issues.blur_above`` (0.5) most of the photo's detail is coarser than the box.
- **dark**: the brightest 1 % of pixels (luminance, 99th percentile) stay under
  ``data_issues.dark_below`` of full scale (0.25: two photographic stops under), so even the
  highlights are shadows; real pets' lowest is ~0.5.
- **tiny**: the short side needs more than ``data_issues.tiny_upscale`` times upscaling to
  reach ``decode.size``, so most of what the network sees is interpolation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

REBLUR = 11  # the box the photo is re-blurred with (Crete-Roffet's and scikit-image's size)
BRIGHT = 99  # the percentile of luminance that must reach dark_below
BATCH = 64  # decoded photos in memory at once
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601


@dataclass
class Quality:
    """Per photo (rows of the input): blur effect, highlight brightness, short side."""

    blur: np.ndarray  # 0 (sharp) .. 1 (flat)
    brightness: np.ndarray  # the 99th luminance percentile, 0 .. 1
    short_side: np.ndarray  # pixels of the original photo


def blur_effect(grey: np.ndarray) -> np.ndarray:
    """Crete-Roffet blur effect of each image in ``grey`` (B, H, W): the larger of the two
    axes' share of contrast that an 11-pixel box re-blur leaves intact.

    The box filter's neighbour difference is a difference of pixels 11 apart divided by 11, so
    no filtered copy is made; the 5-pixel borders, where a box needs padding, are left out."""
    grey = np.asarray(grey, dtype=np.float32)
    worst = np.zeros(len(grey))
    half = REBLUR // 2
    for view in (grey, grey.transpose(0, 2, 1)):  # down the columns, then along the rows
        size = view.shape[1]
        if size <= REBLUR:
            continue
        sharp = np.abs(view[:, half + 1 : size - half] - view[:, half : size - half - 1])
        reblurred = np.abs(view[:, REBLUR:] - view[:, : size - REBLUR]) / REBLUR
        total = sharp.sum(axis=(1, 2), dtype=np.float64)
        lost = np.maximum(sharp - reblurred, 0).sum(axis=(1, 2), dtype=np.float64)
        kept = np.divide(total - lost, total, out=np.ones_like(total), where=total > 0)
        worst = np.maximum(worst, kept)
    return worst


def measure(pixels: Callable[[slice], np.ndarray], n: int, short_side: np.ndarray) -> Quality:
    """Blur and brightness of ``n`` decoded photos (``pixels(slice)`` -> (B, S, S, 3) uint8),
    in batches so the cache is never loaded whole."""
    blur, brightness = np.empty(n), np.empty(n)
    for start in range(0, n, BATCH):
        part = slice(start, min(start + BATCH, n))
        grey = pixels(part).astype(np.float32) @ LUMA / 255.0
        blur[part] = blur_effect(grey)
        flat = grey.reshape(len(grey), -1)
        rank = int(BRIGHT / 100 * (flat.shape[1] - 1))  # the pixel 99 % of the others are under
        brightness[part] = np.partition(flat, rank, axis=1)[:, rank]
    return Quality(blur, brightness, np.asarray(short_side, dtype=np.int64))


def flags(
    quality: Quality, blur_above: float, dark_below: float, tiny_upscale: float, decode_size: int
) -> dict[str, np.ndarray]:
    """Kind -> per-photo mask."""
    return {
        "blurry": quality.blur > blur_above,
        "dark": quality.brightness < dark_below,
        "tiny": quality.short_side * tiny_upscale < decode_size,
    }
