"""Image-property drift: the photos' width, height, file format and greyscale share.

These change when the traffic changes (a new phone app that sends 4000-px HEIC-turned-JPEG
photos, a scanner that sends greyscale), often before accuracy does, and they are recorded
without keeping a photo. Four tests, Bonferroni over the four:

- width and height: two-sample Kolmogorov-Smirnov (scipy), which with ties (many photos share a
  size) is conservative, never liberal;
- greyscale share: Fisher's exact test on the 2x2 table (grey or not, reference or window),
  exact at any count, where a chi-squared approximation fails on a handful of grey photos;
- format: Fisher's exact test on the share of the reference's most common format (JPEG for
  the Oxford pets), for the same reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.stats import fisher_exact, ks_2samp

from petsml.monitoring.window import Sample

TESTS = ("width", "height", "greyscale", "format")


@dataclass(frozen=True)
class ImageDriftResult:
    p_value: float  # Bonferroni over the four tests
    p_values: dict[str, float]
    shares: dict[str, dict[str, float]] = field(default_factory=dict)  # what changed, readable


def _fisher(ref_hits: int, ref_n: int, win_hits: int, win_n: int) -> float:
    table = [[ref_hits, ref_n - ref_hits], [win_hits, win_n - win_hits]]
    return float(fisher_exact(table).pvalue)


def _ks(a: np.ndarray, b: np.ndarray) -> float:
    if np.array_equal(np.unique(a), np.unique(b)) and len(np.unique(a)) == 1:
        return 1.0  # one value on both sides: nothing to test
    return float(ks_2samp(a, b).pvalue)


def image_drift_test(reference: Sample, window: Sample) -> ImageDriftResult:
    formats, counts = np.unique(reference.format, return_counts=True)
    main = str(formats[np.argmax(counts)]) if len(formats) else ""
    ref_n, win_n = len(reference), len(window)
    ref_main, win_main = int(np.sum(reference.format == main)), int(np.sum(window.format == main))
    ref_grey, win_grey = int(reference.greyscale.sum()), int(window.greyscale.sum())
    p_values = {
        "width": _ks(reference.width, window.width),
        "height": _ks(reference.height, window.height),
        "greyscale": _fisher(ref_grey, ref_n, win_grey, win_n),
        "format": _fisher(ref_main, ref_n, win_main, win_n),
    }
    shares = {
        "greyscale": {"reference": ref_grey / ref_n, "window": win_grey / win_n},
        f"format {main or '?'}": {"reference": ref_main / ref_n, "window": win_main / win_n},
        "median width": {"reference": float(np.median(reference.width)),
                         "window": float(np.median(window.width))},
        "median height": {"reference": float(np.median(reference.height)),
                          "window": float(np.median(window.height))},
    }  # fmt: skip
    return ImageDriftResult(min(1.0, len(TESTS) * min(p_values.values())), p_values, shares)
