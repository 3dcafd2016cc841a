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

from dataclasses import dataclass

import numpy as np

REBLUR = 11  # the box the photo is re-blurred with (Crete-Roffet's and scikit-image's size)
BRIGHT = 99  # the percentile of luminance that must reach dark_below
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32) / 255.0  # ITU-R BT.601, to 0 .. 1


@dataclass
class Quality:
    """Per photo (rows of the input): blur effect, highlight brightness, short side."""

    blur: np.ndarray  # 0 (sharp) .. 1 (flat)
    brightness: np.ndarray  # the 99th luminance percentile, 0 .. 1
    short_side: np.ndarray  # pixels of the original photo


def luminance(pixels: np.ndarray) -> np.ndarray:
    """(B, H, W, 3) uint8 RGB -> (B, H, W) float32 luma, 0 .. 1."""
    return pixels.astype(np.float32) @ LUMA


def _kept(sharp: np.ndarray, reblurred: np.ndarray) -> np.ndarray:
    """Per image: the share of ``|sharp|`` contrast that ``|reblurred| / REBLUR`` keeps, which
    is sum(min(sharp, reblurred)) / sum(sharp), computed in place on the two differences."""
    np.abs(sharp, out=sharp)
    np.abs(reblurred, out=reblurred)
    reblurred *= np.float32(1 / REBLUR)
    total = sharp.sum(axis=(1, 2), dtype=np.float64)
    kept = np.minimum(sharp, reblurred, out=reblurred).sum(axis=(1, 2), dtype=np.float64)
    return np.divide(kept, total, out=np.ones_like(total), where=total > 0)


def blur_effect(grey: np.ndarray) -> np.ndarray:
    """Crete-Roffet blur effect of each image in ``grey`` (B, H, W): the larger of the two
    axes' share of contrast that an 11-pixel box re-blur leaves intact.

    The box filter's neighbour difference is a difference of pixels 11 apart divided by 11, so
    no filtered copy is made; the 5-pixel borders, where a box needs padding, are left out.
    Both axes are sliced in place (no transposed copy), a few photos at a time, so the
    differences stay in the CPU's cache."""
    grey = np.asarray(grey, dtype=np.float32)
    worst = np.zeros(len(grey))
    half = REBLUR // 2
    height, width = grey.shape[1:]
    for start in range(0, len(grey), 8):
        v = grey[start : start + 8]
        part = worst[start : start + 8]
        if height > REBLUR:  # down the columns
            down = _kept(v[:, half + 1 : height - half] - v[:, half : height - half - 1],
                         v[:, REBLUR:] - v[:, : height - REBLUR])  # fmt: skip
            np.maximum(part, down, out=part)
        if width > REBLUR:  # along the rows
            along = _kept(v[:, :, half + 1 : width - half] - v[:, :, half : width - half - 1],
                          v[:, :, REBLUR:] - v[:, :, : width - REBLUR])  # fmt: skip
            np.maximum(part, along, out=part)
    return worst


def brightness(grey: np.ndarray) -> np.ndarray:
    """Per image: the luminance that 99 % of its pixels stay under."""
    flat = grey.reshape(len(grey), -1)
    rank = int(BRIGHT / 100 * (flat.shape[1] - 1))
    return np.partition(flat, rank, axis=1)[:, rank].astype(np.float64)


def flags(
    quality: Quality, blur_above: float, dark_below: float, tiny_upscale: float, decode_size: int
) -> dict[str, np.ndarray]:
    """Kind -> per-photo mask."""
    return {
        "blurry": quality.blur > blur_above,
        "dark": quality.brightness < dark_below,
        "tiny": quality.short_side * tiny_upscale < decode_size,
    }
