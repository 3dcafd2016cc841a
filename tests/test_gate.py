"""The promotion gate's statistics (petsml.tracking.gate): pure functions, no MLflow.

McNemar p-values are checked against hand-computed binomial tails and against SciPy's own
tests (``binomtest``, which the gate does not call); each branch of :func:`gate` is reached
with a prediction table built to land there.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest

from petsml.tracking.errors import RegistryError
from petsml.tracking.gate import (
    EXACT_BELOW,
    TestSetMismatch,
    gate,
    mcnemar,
    pair_predictions,
    pick_best,
)
from tests.predictions import N_TEST, masks, predictions_table

# --------------------------------------------------------------------------- McNemar


def test_mcnemar_exact_matches_hand_computed_binomial_tails():
    # b=1, c=9: P[X <= 1] for Binom(10, 1/2) = (1 + 10) / 1024, two-sided doubles it.
    result = mcnemar(1, 9)
    assert result.method == "exact"
    assert result.p_value == pytest.approx(22 / 1024)
    # b=3, c=5: P[X <= 3] for Binom(8, 1/2) = (1 + 8 + 28 + 56) / 256.
    assert mcnemar(3, 5).p_value == pytest.approx(2 * 93 / 256)
    # symmetric in b and c
    assert mcnemar(9, 1).p_value == pytest.approx(mcnemar(1, 9).p_value)
    # b = c: the two tails overlap, p is capped at 1
    assert mcnemar(5, 5).p_value == 1.0
    # all 6 discordant pairs one way: 2 / 2^6
    assert mcnemar(0, 6).p_value == pytest.approx(2 / 64)


def test_mcnemar_chi_square_with_continuity_correction_for_many_discordant_pairs():
    result = mcnemar(10, 30)  # b + c = 40 >= 25
    assert result.method == "chi2"
    assert result.statistic == pytest.approx((20 - 1) ** 2 / 40)  # 9.025
    # chi-square with 1 dof: P[X > s] = erfc(sqrt(s / 2)) ~= 0.00266
    assert result.p_value == pytest.approx(math.erfc(math.sqrt(9.025 / 2)))
    assert result.p_value == pytest.approx(0.002663, abs=2e-6)
    # the switch point: 24 discordant pairs are tested exactly, 25 by chi-square
    assert mcnemar(10, 14).method == "exact"
    assert mcnemar(10, 15).method == "chi2"
    assert mcnemar(10, 15).p_value == pytest.approx(math.erfc(math.sqrt(16 / 25 / 2)))


def test_mcnemar_without_discordant_pairs_is_not_significant():
    result = mcnemar(0, 0)
    assert result.p_value == 1.0 and result.method == "none"
    with pytest.raises(ValueError):
        mcnemar(-1, 3)


# --------------------------------------------------------------------------- pairing and gate


def test_pair_predictions_joins_on_image_id_not_row_order():
    champ, chall = masks(both=30, champ_only=4, chall_only=11)
    a = predictions_table(champ)
    b = predictions_table(chall).sample(frac=1.0, random_state=0)  # shuffled rows
    pair = pair_predictions(a, b)
    assert (pair.n, pair.both, pair.champion_only, pair.challenger_only, pair.neither) == (
        60, 30, 4, 11, 15,
    )  # fmt: skip
    assert pair.champion_accuracy == pytest.approx(34 / 60)
    assert pair.challenger_accuracy == pytest.approx(41 / 60)
    # without a `correct` column, correctness is label == pred
    pair2 = pair_predictions(a.drop(columns="correct"), b.drop(columns="correct"))
    assert pair2 == pair


def test_pair_predictions_refuses_different_test_sets():
    champ, chall = masks(both=30, champ_only=4, chall_only=11)
    a = predictions_table(champ)
    other_ids = [f"img_{i:03d}" for i in range(1, N_TEST)] + ["someone_else"]
    with pytest.raises(TestSetMismatch, match="test sets differ"):
        pair_predictions(a, predictions_table(chall, other_ids))
    relabelled = predictions_table(chall)
    relabelled.loc[0, "label"] = 36
    with pytest.raises(TestSetMismatch, match="different labels"):
        pair_predictions(a, relabelled)
    with pytest.raises(RegistryError, match="image_id"):
        pair_predictions(a.drop(columns="image_id"), a)


def test_gate_promotes_only_a_better_and_significant_challenger():
    significant = gate(*map(predictions_table, masks(30, 2, 20)), max_p_value=0.05)
    assert significant.promote and significant.p_value < 0.001
    assert "better and significant" in significant.reason

    worse = gate(*map(predictions_table, masks(30, 20, 2)), max_p_value=0.05)
    assert not worse.promote and worse.reason.startswith("not better")

    close = gate(*map(predictions_table, masks(30, 3, 6)), max_p_value=0.05)
    assert not close.promote and close.reason.startswith("not significant")
    assert close.p_value == pytest.approx(mcnemar(3, 6).p_value)
    assert close.comparison.challenger_accuracy > close.comparison.champion_accuracy
    # the same counts pass a looser threshold
    assert gate(*map(predictions_table, masks(30, 3, 6)), max_p_value=0.6).promote

    tie = gate(*map(predictions_table, masks(30, 5, 5)), max_p_value=0.9)
    assert not tie.promote  # equal accuracy is not better, whatever the threshold

    champ, chall = masks(30, 0, 30)
    moved = gate(
        predictions_table(champ), predictions_table(chall, [f"x{i}" for i in range(N_TEST)]), 0.05
    )
    assert not moved.promote and "test sets differ" in moved.reason


def test_pick_best_uses_validation_accuracy_only():
    assert pick_best({"feature_extractor": 0.81, "svm_early": 0.86}) == "svm_early"
    assert pick_best({"b": 0.8, "a": 0.8, "c": float("nan")}) == "a"  # ties by name
    with pytest.raises(RegistryError, match="val_accuracy"):
        pick_best({"a": None})


def test_mcnemar_exact_agrees_with_scipy_binomtest_below_the_switch():
    for n in range(1, EXACT_BELOW):
        for b in range(n + 1):
            result = mcnemar(b, n - b)
            assert result.method == "exact" and result.statistic is None
            assert result.p_value == pytest.approx(binomtest(b, n, 0.5).pvalue), (b, n - b)


def test_mcnemar_chi_square_agrees_with_the_hand_formula_from_the_switch_on():
    for b, c in [(0, 25), (12, 13), (5, 40), (40, 5), (100, 130)]:
        result = mcnemar(b, c)
        statistic = (abs(b - c) - 1) ** 2 / (b + c)
        assert result.method == "chi2" and result.statistic == pytest.approx(statistic)
        # chi-square with 1 dof: P[X > s] = erfc(sqrt(s / 2))
        assert result.p_value == pytest.approx(math.erfc(math.sqrt(statistic / 2)))
    # b = c + 1: the continuity correction cancels the difference entirely
    assert mcnemar(13, 12).statistic == 0.0 and mcnemar(13, 12).p_value == 1.0
    # the switch point is a parameter: 8 pairs by chi-square when exact_below is 8
    assert mcnemar(3, 5, exact_below=8).statistic == pytest.approx(1 / 8)


def test_gate_at_the_threshold_is_not_significant():
    # 6 discordant pairs, all for the challenger: p = 2 / 64 = 0.03125 exactly
    champion, challenger = map(predictions_table, masks(30, 0, 6))
    at = gate(champion, challenger, max_p_value=2 / 64)
    assert not at.promote and at.reason.startswith("not significant (p >= 0.03125)")
    assert at.p_value == 2 / 64 and at.test.method == "exact"
    above = gate(champion, challenger, max_p_value=0.0313)
    assert above.promote and above.reason.startswith("better and significant (p < 0.0313)")


def test_gate_reason_states_accuracies_discordant_pairs_and_the_test():
    decision = gate(*map(predictions_table, masks(30, 2, 20)), max_p_value=0.05)
    assert decision.comparison.as_dict() == {
        "n": 60, "both": 30, "champion_only": 2, "challenger_only": 20, "neither": 8,
        "champion_accuracy": pytest.approx(32 / 60), "challenger_accuracy": pytest.approx(50 / 60),
    }  # fmt: skip
    assert (decision.test.b, decision.test.c, decision.test.method) == (2, 20, "exact")
    assert decision.p_value == pytest.approx(binomtest(2, 22, 0.5).pvalue)
    assert "test accuracy 0.8333 vs champion 0.5333 on 60 images" in decision.reason
    assert "discordant pairs 20 for / 2 against; McNemar (exact)" in decision.reason


def test_gate_refuses_to_compare_empty_predictions_without_a_test():
    champion, challenger = map(predictions_table, masks(30, 0, 30))
    empty = gate(champion.iloc[:0], challenger.iloc[:0], 0.05)
    assert not empty.promote and empty.reason.startswith("not comparable")
    assert "empty" in empty.reason
    assert (empty.p_value, empty.comparison, empty.test) == (None, None, None)


def test_malformed_predictions_are_an_error_not_a_verdict():
    champion, challenger = map(predictions_table, masks(30, 2, 20))
    with pytest.raises(RegistryError, match="lack column.*pred \\(or correct\\)"):
        gate(champion.drop(columns=["pred", "correct"]), challenger, 0.05)
    twice = pd.concat([challenger, challenger.iloc[:1]])
    with pytest.raises(RegistryError, match="img_000.*more than once"):
        gate(champion, twice, 0.05)


def test_correct_column_read_back_as_text_counts_as_booleans():
    champion, challenger = map(predictions_table, masks(30, 4, 11))
    as_text = challenger.assign(
        correct=np.where(challenger["correct"], "True", np.where(challenger.index % 2, "no", "0"))
    )
    assert pair_predictions(champion, as_text) == pair_predictions(champion, challenger)
