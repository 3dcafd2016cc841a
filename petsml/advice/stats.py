"""The two paired tests behind the advice, on per-photo correctness (True = right).

Both compare two classifiers on the *same* validation photos, so only the photos where they
disagree carry information: an exact McNemar test for "A is right more often than B", and a
paired bootstrap interval for the difference in accuracy. Plain numpy and ``math``: no SciPy
import for two formulas.
"""

from __future__ import annotations

import math

import numpy as np


def mcnemar_greater(a_correct: np.ndarray, b_correct: np.ndarray) -> float:
    """One-sided exact McNemar p-value for "A is more accurate than B" on paired photos.

    Of the ``n`` photos exactly one of the two gets right, A wins ``k``; under the null each is
    a fair coin, so ``p = P(Binomial(n, 1/2) >= k)``. 1.0 when they never disagree.
    """
    a = np.asarray(a_correct, dtype=bool)
    b = np.asarray(b_correct, dtype=bool)
    wins, losses = int(np.sum(a & ~b)), int(np.sum(~a & b))
    n = wins + losses
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(wins, n + 1))
    return min(1.0, tail / 2.0**n)


def paired_bootstrap_ci(
    a_correct: np.ndarray,
    b_correct: np.ndarray,
    level: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """(difference, low, high): accuracy of A minus B and its percentile interval, photos
    resampled with replacement (the same draw for both, which keeps them paired)."""
    a = np.asarray(a_correct, dtype=float)
    b = np.asarray(b_correct, dtype=float)
    diff = a - b
    if diff.size == 0:
        return 0.0, 0.0, 0.0
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, diff.size, size=(resamples, diff.size))
    means = diff[draws].mean(axis=1)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(diff.mean()), float(low), float(high)
