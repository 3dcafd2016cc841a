"""Each metric in petsml.evaluation.metrics against scikit-learn or a value worked by hand."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from petsml.evaluation import metrics as m


@pytest.fixture
def random_case():
    rng = np.random.default_rng(3)
    n, c = 400, 7
    labels = rng.integers(0, c, n)
    logits = rng.normal(0, 1, (n, c))
    logits[np.arange(n), labels] += 1.2  # better than chance, far from perfect
    return labels, logits


def test_softmax_rows_sum_to_one_and_survive_large_logits():
    probs = m.softmax(np.array([[1000.0, 1000.0, 0.0], [0.0, np.log(3.0), 0.0]]))
    assert np.allclose(probs.sum(axis=1), 1.0)
    assert np.allclose(probs[0], [0.5, 0.5, 0.0])
    assert np.allclose(probs[1], [0.2, 0.6, 0.2])


def test_top1_and_top5_match_sklearn(random_case):
    labels, logits = random_case
    preds = logits.argmax(1)
    assert m.accuracy(labels, preds) == pytest.approx(skm.accuracy_score(labels, preds))
    assert m.top_k_accuracy(labels, logits, 1) == pytest.approx(skm.accuracy_score(labels, preds))
    expected = skm.top_k_accuracy_score(labels, logits, k=5, labels=np.arange(7))
    assert m.top_k_accuracy(labels, logits, 5) == pytest.approx(expected)
    assert m.top_k_accuracy(labels, logits, 5) > m.top_k_accuracy(labels, logits, 1)


def test_top5_with_two_classes_is_capped_and_always_hits():
    labels = np.array([0, 1, 1, 0])
    scores = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.4, 0.6]])
    assert m.top_k(scores, 5).shape == (4, 2)
    assert m.top_k_accuracy(labels, scores, 5) == 1.0
    assert m.top_k_accuracy(labels, scores, 1) == 0.5


def test_top_k_orders_by_score():
    scores = np.array([[0.1, 0.5, 0.2, 0.15, 0.05]])
    assert m.top_k(scores, 3).tolist() == [[1, 2, 3]]


def test_confusion_matrix_matches_sklearn_and_hand_case(random_case):
    labels, logits = random_case
    preds = logits.argmax(1)
    expected = skm.confusion_matrix(labels, preds, labels=np.arange(7))
    assert np.array_equal(m.confusion_matrix(labels, preds, 7), expected)
    hand = m.confusion_matrix(np.array([0, 0, 1, 2, 2, 2]), np.array([0, 1, 1, 2, 0, 0]), 3)
    assert hand.tolist() == [[1, 1, 0], [0, 1, 0], [2, 0, 1]]
    with pytest.raises(ValueError):
        m.confusion_matrix(np.array([0, 3]), np.array([0, 1]), 3)


def test_macro_f1_matches_sklearn(random_case):
    labels, logits = random_case
    preds = logits.argmax(1)
    expected = skm.f1_score(labels, preds, average="macro")
    assert m.macro_f1(labels, preds, 7) == pytest.approx(expected)


def test_macro_f1_ignores_classes_absent_from_labels_and_preds_like_sklearn():
    labels = np.array([0, 0, 1, 1, 1])
    preds = np.array([0, 1, 1, 1, 0])
    # class 2 and 3 never occur: sklearn's default averages over classes 0 and 1 only
    expected = skm.f1_score(labels, preds, average="macro")
    assert m.macro_f1(labels, preds, 4) == pytest.approx(expected)
    # by hand: class 0 P=1/2 R=1/2 F1=1/2; class 1 P=2/3 R=2/3 F1=2/3
    assert m.macro_f1(labels, preds, 4) == pytest.approx((0.5 + 2 / 3) / 2)


def test_per_class_accuracy_is_recall_and_nan_without_support(random_case):
    labels, logits = random_case
    preds = logits.argmax(1)
    cm = m.confusion_matrix(labels, preds, 7)
    expected = skm.recall_score(labels, preds, average=None, labels=np.arange(7))
    assert np.allclose(m.per_class_accuracy(cm), expected)
    sparse = m.per_class_accuracy(m.confusion_matrix(np.array([0, 0, 2]), np.array([0, 1, 1]), 3))
    assert sparse[0] == 0.5 and np.isnan(sparse[1]) and sparse[2] == 0.0


def test_ece_is_zero_when_confidence_equals_accuracy():
    # 10 images at confidence 0.8 of which 8 are right, 10 at 0.6 of which 6 are right
    probs = np.array([[0.8, 0.2]] * 10 + [[0.4, 0.6]] * 10)
    labels = np.array([0] * 8 + [1] * 2 + [1] * 6 + [0] * 4)
    assert m.expected_calibration_error(probs, labels, n_bins=10) == pytest.approx(0.0, abs=1e-12)


def test_ece_of_an_overconfident_model():
    # always 99% sure, right half the time: ECE = |0.5 - 0.99| = 0.49
    probs = np.array([[0.99, 0.01]] * 50 + [[0.01, 0.99]] * 50)
    labels = np.array([0] * 25 + [1] * 25 + [1] * 25 + [0] * 25)
    assert m.expected_calibration_error(probs, labels, n_bins=15) == pytest.approx(0.49)


def test_ece_weights_bins_by_their_share():
    # bin (0.6, 0.7]: 4 images, conf 0.65, all right -> gap 0.35
    # bin (0.9, 1.0]: 6 images, conf 0.95, 3 right -> gap 0.45
    probs = np.array([[0.65, 0.35]] * 4 + [[0.95, 0.05]] * 6)
    labels = np.array([0] * 4 + [0, 0, 0, 1, 1, 1])
    bins = m.reliability_bins(probs, labels, 10)
    assert bins.count.tolist() == [0] * 6 + [4, 0, 0, 6]
    assert np.allclose(bins.accuracy[[6, 9]], [1.0, 0.5])
    assert np.isnan(bins.confidence[0])
    assert bins.ece == pytest.approx(0.4 * 0.35 + 0.6 * 0.45)


def test_confused_pairs_top_off_diagonal_cells_with_names():
    cm = np.array([[5, 3, 0], [1, 4, 3], [7, 0, 9]])
    pairs = m.confused_pairs(cm, ["a", "b", "c"], top=3)
    assert [(p["actual_name"], p["predicted_name"], p["count"]) for p in pairs] == [
        ("c", "a", 7),
        ("a", "b", 3),  # ties: lower actual id first
        ("b", "c", 3),
    ]
    assert len(m.confused_pairs(cm, ["a", "b", "c"])) == 4  # zeros and the diagonal left out
    assert m.confused_pairs(np.eye(3, dtype=int), ["a", "b", "c"]) == []


def test_confused_pairs_caps_at_ten():
    rng = np.random.default_rng(0)
    cm = rng.integers(1, 50, (6, 6))
    pairs = m.confused_pairs(cm, [str(i) for i in range(6)])
    assert len(pairs) == 10
    counts = [p["count"] for p in pairs]
    off = cm[~np.eye(6, dtype=bool)]
    assert counts == sorted(off.tolist(), reverse=True)[:10]


def test_summarize_agrees_with_the_single_metrics(random_case):
    labels, logits = random_case
    out = m.summarize(labels, logits, n_bins=15)
    probs = m.softmax(logits)
    assert out["accuracy"] == pytest.approx(skm.accuracy_score(labels, logits.argmax(1)))
    assert out["top5"] == pytest.approx(m.top_k_accuracy(labels, logits, 5))
    assert out["macro_f1"] == pytest.approx(skm.f1_score(labels, logits.argmax(1), average="macro"))
    assert out["ece"] == pytest.approx(m.expected_calibration_error(probs, labels, 15))
