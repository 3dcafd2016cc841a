"""Classification metrics as pure numpy functions.

Every function takes integer labels (N,) and either predictions (N,) or scores/probabilities
(N, C), and knows nothing about models, files or plots, so each is checked against scikit-learn
or a hand computation in ``tests/test_metrics.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, stable for large logits; float64 out."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """(N, k') class ids by descending score, k' = min(k, n_classes); ties go to the lower id."""
    scores = np.asarray(scores)
    k = max(1, min(int(k), scores.shape[1]))
    order = np.argsort(-scores, axis=1, kind="stable")
    return order[:, :k]


def top_k_accuracy(labels: np.ndarray, scores: np.ndarray, k: int) -> float:
    """Share of rows whose label is among the ``k`` best scores (k capped at n_classes)."""
    labels = np.asarray(labels)
    if len(labels) == 0:
        return float("nan")
    hits = (top_k(scores, k) == labels[:, None]).any(axis=1)
    return float(hits.mean())


def accuracy(labels: np.ndarray, preds: np.ndarray) -> float:
    labels, preds = np.asarray(labels), np.asarray(preds)
    return float((labels == preds).mean()) if len(labels) else float("nan")


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, n_classes: int) -> np.ndarray:
    """(C, C) int64 counts; row = actual class, column = predicted class."""
    labels = np.asarray(labels, dtype=np.int64)
    preds = np.asarray(preds, dtype=np.int64)
    for name, values in (("labels", labels), ("preds", preds)):
        if len(values) and (values.min() < 0 or values.max() >= n_classes):
            raise ValueError(f"{name} hold a class id outside 0..{n_classes - 1}")
    flat = np.bincount(labels * n_classes + preds, minlength=n_classes * n_classes)
    return flat.reshape(n_classes, n_classes).astype(np.int64)


def per_class_accuracy(cm: np.ndarray) -> np.ndarray:
    """Recall of each class (diagonal / row sum); NaN for a class with no test images."""
    cm = np.asarray(cm, dtype=np.float64)
    support = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(cm) / np.where(support > 0, support, 1), np.nan)


def per_class_f1(cm: np.ndarray) -> np.ndarray:
    """F1 of each class from a confusion matrix; 0 where precision + recall is 0."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    denom = cm.sum(axis=0) + cm.sum(axis=1)  # 2tp + fp + fn
    return np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)


def macro_f1(labels: np.ndarray, preds: np.ndarray, n_classes: int) -> float:
    """Unweighted mean F1 over the classes that occur in ``labels`` or ``preds``.

    The same set of classes as ``sklearn.metrics.f1_score(average="macro")`` without an explicit
    ``labels=``, so a class absent from the test set does not drag the mean down with a zero.
    """
    cm = confusion_matrix(labels, preds, n_classes)
    present = (cm.sum(axis=0) + cm.sum(axis=1)) > 0
    if not present.any():
        return float("nan")
    return float(per_class_f1(cm)[present].mean())


@dataclass(frozen=True)
class ReliabilityBins:
    """Equal-width bins on the max softmax probability (bin i covers (i/n, (i+1)/n])."""

    edges: np.ndarray  # (n + 1,)
    count: np.ndarray  # (n,) images per bin
    confidence: np.ndarray  # (n,) mean max-probability per bin (NaN when empty)
    accuracy: np.ndarray  # (n,) share correct per bin (NaN when empty)

    @property
    def ece(self) -> float:
        total = self.count.sum()
        if total == 0:
            return float("nan")
        used = self.count > 0
        gap = np.abs(self.accuracy[used] - self.confidence[used])
        return float((self.count[used] / total * gap).sum())


def reliability_bins(probs: np.ndarray, labels: np.ndarray, n_bins: int) -> ReliabilityBins:
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    # (lo, hi] bins; the tiny tolerance keeps 0.8 * 10 = 8.000000000000002 out of bin 8.
    idx = np.clip(np.ceil(conf * n_bins - 1e-9).astype(np.int64) - 1, 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins)
    conf_sum = np.bincount(idx, weights=conf, minlength=n_bins)
    correct_sum = np.bincount(idx, weights=correct, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence = np.where(count > 0, conf_sum / np.maximum(count, 1), np.nan)
        acc = np.where(count > 0, correct_sum / np.maximum(count, 1), np.nan)
    return ReliabilityBins(np.linspace(0.0, 1.0, n_bins + 1), count, confidence, acc)


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    """ECE: sum over bins of (bin share) x |accuracy - mean confidence|."""
    return reliability_bins(probs, labels, n_bins).ece


def confused_pairs(
    cm: np.ndarray, class_names: Sequence[str], top: int = 10
) -> list[dict[str, object]]:
    """The ``top`` largest off-diagonal cells: actual class predicted as another one.

    Sorted by count (descending), then actual and predicted id; zero cells are left out.
    """
    cm = np.asarray(cm)
    off = cm.copy()
    np.fill_diagonal(off, 0)
    actual, predicted = np.nonzero(off)
    counts = off[actual, predicted]
    order = np.lexsort((predicted, actual, -counts))[:top]
    return [
        {
            "actual": int(actual[i]),
            "actual_name": str(class_names[actual[i]]),
            "predicted": int(predicted[i]),
            "predicted_name": str(class_names[predicted[i]]),
            "count": int(counts[i]),
        }
        for i in order
    ]


def summarize(
    labels: np.ndarray, logits: np.ndarray, n_bins: int = 15, k: int = 5
) -> dict[str, float]:
    """Headline test metrics of one model from its logits."""
    labels = np.asarray(labels)
    probs = softmax(logits)
    preds = probs.argmax(axis=1)
    n_classes = probs.shape[1]
    return {
        "accuracy": accuracy(labels, preds),
        "top5": top_k_accuracy(labels, probs, k),
        "macro_f1": macro_f1(labels, preds, n_classes),
        "ece": expected_calibration_error(probs, labels, n_bins),
    }


# The metrics registry's computations (petsml.catalog.metrics): (labels, logits, n_bins) -> float.


def top1_accuracy(labels: np.ndarray, logits: np.ndarray, n_bins: int) -> float:
    return accuracy(np.asarray(labels), np.asarray(logits).argmax(axis=1))


def top5_accuracy(labels: np.ndarray, logits: np.ndarray, n_bins: int) -> float:
    return top_k_accuracy(np.asarray(labels), softmax(logits), 5)


def macro_f1_of(labels: np.ndarray, logits: np.ndarray, n_bins: int) -> float:
    logits = np.asarray(logits)
    return macro_f1(np.asarray(labels), logits.argmax(axis=1), logits.shape[1])


def ece_of(labels: np.ndarray, logits: np.ndarray, n_bins: int) -> float:
    return expected_calibration_error(softmax(logits), np.asarray(labels), n_bins)
