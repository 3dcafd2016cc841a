"""Confidence: how sure the model is of its answers, window against reference.

Two effect sizes a person can read: the mean top-1 probability, and the share of answers below
``monitor.low_confidence``. Each has a threshold (``monitor.confidence_drop``,
``monitor.low_share_rise``) rather than a test: a model that is 15 points less sure of itself
is worth a look whatever a p-value says, and a drift of a point or two is not, however many
photos make it significant. BBSD's tests already cover "the outputs changed at all".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ConfidenceResult:
    reference_mean: float
    window_mean: float
    reference_low_share: float  # share of answers under the low-confidence threshold
    window_low_share: float
    drifted: bool

    @property
    def drop(self) -> float:
        return self.reference_mean - self.window_mean

    @property
    def low_share_rise(self) -> float:
        return self.window_low_share - self.reference_low_share


def confidence_check(
    reference: np.ndarray, window: np.ndarray, low: float, max_drop: float, max_rise: float
) -> ConfidenceResult:
    """Top-1 probabilities ``reference`` and ``window`` (1-d) compared with the thresholds."""
    ref_mean, win_mean = float(np.mean(reference)), float(np.mean(window))
    ref_low, win_low = float(np.mean(reference < low)), float(np.mean(window < low))
    drifted = ref_mean - win_mean > max_drop or win_low - ref_low > max_rise
    return ConfidenceResult(ref_mean, win_mean, ref_low, win_low, drifted)
