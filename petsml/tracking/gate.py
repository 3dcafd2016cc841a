"""The promotion gate's statistics: pure functions of two per-image test predictions.

A challenger replaces the champion only when it is better on the same test images *and* the
difference is unlikely to be chance: :func:`gate` pairs the two prediction tables on
``image_id`` (:func:`pair_predictions`) and runs a two-sided McNemar test on the discordant
pairs (:func:`mcnemar`). :func:`pick_best` chooses an execution's candidate by validation
accuracy, so the test set only ever judges. Nothing here touches MLflow.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd

from petsml.tracking.errors import RegistryError

# Where the track stage logs each run's per-image test predictions (the gate's input).
PREDICTIONS_ARTIFACT = "eval/predictions.csv"
# Below this many discordant pairs McNemar uses the exact binomial test, above it the
# chi-square approximation with continuity correction (the usual rule of thumb: b + c < 25).
EXACT_BELOW = 25


class TestSetMismatch(RegistryError):
    """Two models' predictions do not cover the same test images with the same labels."""

    __test__ = False  # not a pytest test class


@dataclass(frozen=True)
class McNemarResult:
    b: int  # discordant pairs where only the first model (the champion) is right
    c: int  # discordant pairs where only the second model (the challenger) is right
    statistic: float | None  # chi-square statistic; None for the exact test
    p_value: float
    method: str  # "exact" | "chi2" | "none" (no discordant pairs)


def mcnemar(b: int, c: int, exact_below: int = EXACT_BELOW) -> McNemarResult:
    """Two-sided McNemar test on the discordant counts ``b`` and ``c``.

    With ``b + c < exact_below`` the exact test: under H0 each discordant pair goes either way
    with probability 1/2, so ``p = min(1, 2 * P[Binom(b + c, 1/2) <= min(b, c)])``. Otherwise
    the chi-square statistic with continuity correction ``(|b - c| - 1)^2 / (b + c)`` on one
    degree of freedom. No discordant pairs at all gives ``p = 1``.
    """
    from scipy import stats

    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0, got b={b}, c={c}")
    n = b + c
    if n == 0:
        return McNemarResult(b, c, None, 1.0, "none")
    if n < exact_below:
        p = min(1.0, 2.0 * float(stats.binom.cdf(min(b, c), n, 0.5)))
        return McNemarResult(b, c, None, p, "exact")
    statistic = (abs(b - c) - 1) ** 2 / n
    return McNemarResult(b, c, float(statistic), float(stats.chi2.sf(statistic, 1)), "chi2")


@dataclass(frozen=True)
class PairedComparison:
    n: int  # test images both models predicted
    both: int  # both right
    champion_only: int  # b: only the champion right
    challenger_only: int  # c: only the challenger right
    neither: int

    @property
    def champion_accuracy(self) -> float:
        return (self.both + self.champion_only) / self.n

    @property
    def challenger_accuracy(self) -> float:
        return (self.both + self.challenger_only) / self.n

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "champion_accuracy": self.champion_accuracy,
            "challenger_accuracy": self.challenger_accuracy,
        }


def _correctness(frame: pd.DataFrame, who: str) -> pd.DataFrame:
    missing = {"image_id", "label"} - set(frame.columns)
    if "correct" not in frame.columns and "pred" not in frame.columns:
        missing.add("pred (or correct)")
    if missing:
        raise RegistryError(
            f"{who} predictions lack column(s) {sorted(missing)}; {PREDICTIONS_ARTIFACT} must "
            "hold image_id, label, pred, correct (written by the track stage)."
        )
    if frame["image_id"].duplicated().any():
        dup = frame.loc[frame["image_id"].duplicated(), "image_id"].iloc[0]
        raise RegistryError(f"{who} predictions list image {dup!r} more than once.")
    if "correct" in frame.columns:
        correct = frame["correct"].map(_as_bool)
    else:
        correct = frame["label"].astype(str) == frame["pred"].astype(str)
    return pd.DataFrame(
        {
            "image_id": frame["image_id"].astype(str),
            "label": frame["label"].astype(str),
            "correct": correct.astype(bool),
        }
    )


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "t")
    return bool(value)


def pair_predictions(champion: pd.DataFrame, challenger: pd.DataFrame) -> PairedComparison:
    """Join two per-image test predictions on ``image_id`` and count the 2x2 table.

    Raises :class:`TestSetMismatch` unless both cover exactly the same images with the same
    labels: models scored on different test sets cannot be compared pairwise.
    """
    a = _correctness(champion, "champion")
    b = _correctness(challenger, "challenger")
    ids_a, ids_b = set(a["image_id"]), set(b["image_id"])
    if ids_a != ids_b:
        only_a, only_b = sorted(ids_a - ids_b), sorted(ids_b - ids_a)
        raise TestSetMismatch(
            f"the test sets differ: {len(only_a)} image(s) only in the champion's predictions "
            f"(e.g. {only_a[:3]}), {len(only_b)} only in the challenger's (e.g. {only_b[:3]})"
        )
    if not ids_a:
        raise TestSetMismatch("the predictions are empty: no test images to compare on")
    joined = a.merge(b, on="image_id", suffixes=("_a", "_b"), validate="one_to_one")
    relabelled = joined["label_a"] != joined["label_b"]
    if relabelled.any():
        raise TestSetMismatch(
            f"the test sets differ: {int(relabelled.sum())} image(s) carry different labels "
            f"(e.g. {joined.loc[relabelled, 'image_id'].iloc[0]!r})"
        )
    ca, cb = joined["correct_a"], joined["correct_b"]
    return PairedComparison(
        n=len(joined),
        both=int((ca & cb).sum()),
        champion_only=int((ca & ~cb).sum()),
        challenger_only=int((~ca & cb).sum()),
        neither=int((~ca & ~cb).sum()),
    )


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reason: str
    p_value: float | None = None
    comparison: PairedComparison | None = None
    test: McNemarResult | None = None


def gate(champion: pd.DataFrame, challenger: pd.DataFrame, max_p_value: float) -> GateDecision:
    """Should ``challenger`` replace ``champion``? Both are per-image test predictions.

    Yes only if the challenger's test accuracy is strictly higher on the same images and the
    McNemar p-value is below ``max_p_value``.
    """
    try:
        pair = pair_predictions(champion, challenger)
    except TestSetMismatch as error:
        return GateDecision(False, f"not comparable: {error}")
    test = mcnemar(pair.champion_only, pair.challenger_only)
    acc = (
        f"test accuracy {pair.challenger_accuracy:.4f} vs champion {pair.champion_accuracy:.4f} "
        f"on {pair.n} images; discordant pairs {pair.challenger_only} for / "
        f"{pair.champion_only} against; McNemar ({test.method}) p={test.p_value:.4g}"
    )
    if pair.challenger_accuracy <= pair.champion_accuracy:
        return GateDecision(False, f"not better: {acc}", test.p_value, pair, test)
    if test.p_value >= max_p_value:
        return GateDecision(
            False, f"not significant (p >= {max_p_value}): {acc}", test.p_value, pair, test
        )
    return GateDecision(True, f"better and significant (p < {max_p_value}): {acc}",
                        test.p_value, pair, test)  # fmt: skip


def pick_best(val_accuracy: Mapping[str, float | None]) -> str:
    """The strategy with the highest VALIDATION accuracy (ties: first in name order)."""
    scored = {k: v for k, v in val_accuracy.items() if v is not None and not math.isnan(v)}
    if not scored:
        raise RegistryError(
            "no strategy has a val_accuracy metric; re-run `dvc repro track` so each child run "
            "logs val_accuracy."
        )
    return sorted(scored, key=lambda k: (-scored[k], k))[0]
