"""Prediction drift: black-box shift detection (BBSD) on the model's softmax outputs.

Rabanser et al. ("Failing Loudly", NeurIPS 2019) found BBSD, the served model itself used as the
dimensionality reduction, the best single detector on image shifts, with univariate tests per
softmax dimension: a two-sample Kolmogorov-Smirnov test for each class's probability, reference
against window, the smallest p-value Bonferroni-corrected for the number of classes (Lipton,
Wang, Smola, ICML 2018, for label shift). It catches a change in what is predicted (label
shift: a shelter that only sees three breeds) and in how it is predicted (the same breeds, but
blurred photos: flatter softmax outputs) alike, and needs no embedding.

scipy's ``ks_2samp`` (exact for small samples, asymptotic past that) gives each p-value.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import ks_2samp


@dataclass(frozen=True)
class BBSDResult:
    p_value: float  # Bonferroni-corrected: min(1, K * min per-class p)
    statistics: np.ndarray  # (K,) KS statistic per class
    p_values: np.ndarray  # (K,) uncorrected per-class p-values
    worst_class: int  # the class with the smallest p-value


def bbsd_test(reference: np.ndarray, window: np.ndarray) -> BBSDResult:
    """Per-class KS tests of (N, K) softmax outputs, Bonferroni over the K classes."""
    reference, window = np.asarray(reference), np.asarray(window)
    if reference.shape[1] != window.shape[1]:
        raise ValueError(
            f"softmax outputs over {reference.shape[1]} and {window.shape[1]} classes: "
            "reference and window come from different models"
        )
    k = reference.shape[1]
    stats, p_values = np.ones(k), np.ones(k)
    for c in range(k):
        result = ks_2samp(reference[:, c], window[:, c])
        stats[c], p_values[c] = float(result.statistic), float(result.pvalue)
    worst = int(np.argmin(p_values))
    return BBSDResult(min(1.0, k * float(p_values[worst])), stats, p_values, worst)
