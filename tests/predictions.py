"""Test-set prediction tables with a chosen correctness, as the evaluate stage writes them.

The gate and registry tests build champion/challenger pairs with exact 2x2 counts from these.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from petsml.data.breeds import BREEDS

N_TEST = 60


def labels_of(n: int = N_TEST) -> np.ndarray:
    return np.arange(n) % len(BREEDS)


def predictions_table(correct: np.ndarray, ids: list[str] | None = None) -> pd.DataFrame:
    """Per-image test predictions with the given correctness mask (wrong = next class)."""
    labels = labels_of(len(correct))
    preds = np.where(correct, labels, (labels + 1) % len(BREEDS))
    return pd.DataFrame(
        {
            "image_id": ids or [f"img_{i:03d}" for i in range(len(correct))],
            "label": labels,
            "pred": preds,
            "correct": correct.astype(bool),
            "probability": 0.5,
        }
    )


def masks(both: int, champ_only: int, chall_only: int, n: int = N_TEST):
    """Champion and challenger correctness with exactly these 2x2 counts (rest: neither)."""
    neither = n - both - champ_only - chall_only
    assert neither >= 0
    champion = np.array([1] * both + [1] * champ_only + [0] * chall_only + [0] * neither, bool)
    challenger = np.array([1] * both + [0] * champ_only + [1] * chall_only + [0] * neither, bool)
    return champion, challenger
