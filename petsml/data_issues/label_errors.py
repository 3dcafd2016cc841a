"""Likely label errors: out-of-fold probabilities of a linear probe, then confident learning.

A photo's given label is doubtful when a model that never saw the photo is confident it shows
another class. Two parts:

1. **Out-of-fold probabilities**: the train and validation photos' penultimate features in
   ``data_issues.folds`` stratified folds; each fold's photos are scored by a logistic probe
   (standardised features, ``data_issues.C``: the ``feature_extractor`` head's kind) fitted on
   the other folds. Every probability is out-of-sample, which confident learning requires.
   Ten folds, Kohavi's recommendation for stratified cross-validation (IJCAI 1995): each
   probe learns from 90 % of the photos, close to what the shipped head sees, which matters
   most where a class has few photos (on the shipped sample, 5-7 photos a breed, five folds
   confused more look-alike breeds: over four seeds of ``benchmarks/data_issues.py`` the
   flagged list's precision ranged 0.43-0.92 with five folds, 0.55-0.92 with ten).
2. **Confident learning** (Northcutt, Jiang and Chuang, "Confident Learning: Estimating
   Uncertainty in Dataset Labels", JAIR 2021), written from the paper: per class ``k`` the
   threshold ``t_k`` is the mean probability of ``k`` over the photos labelled ``k`` (the
   model's own confidence on its class, so miscalibration cancels); a photo counts towards the
   confident joint at ``(given, j)`` when ``p_j >= t_j`` (the largest such ``j``). The
   off-diagonal count estimates how many labels are wrong (cleanlab's ``num_label_issues``,
   ``off_diagonal``), and that many photos with the lowest *self-confidence* (probability of
   the given label) are flagged, most doubtful first: cleanlab's ``find_label_issues`` with
   ``filter_by="low_self_confidence"``, ranked by ``self_confidence``.

Why that rule and not the paper's default pruning (``prune_by_noise_rate``, which prunes along
each off-diagonal by margin): with few photos per class (the shipped sample has 5-7 per breed),
a swapped label often leaves the probability spread over several look-alike breeds, none above
its class threshold, so it never enters an off-diagonal cell although its self-confidence is
near zero; ranking by self-confidence finds it, while the count still comes from the confident
joint. Nothing is relabelled: the list is reported (and excluded from training only with
``data_issues.exclude_label_issues``).
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from multiprocessing import get_context

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from petsml.models.heads import BLAS_THREADS

MAX_ITER = 1000
TOLERANCE = 1e-6  # a probability equal to a threshold counts as reaching it (float rounding)


@dataclass
class LabelIssues:
    """Confident learning's verdict on every photo given to it (rows of its input)."""

    rows: np.ndarray  # flagged rows, most doubtful (lowest self-confidence) first
    suggested: np.ndarray  # per row: the class the photo more likely shows
    self_confidence: np.ndarray  # per row: the probability of its given label
    thresholds: np.ndarray  # per class: t_k (inf for a class with no photo)
    estimated: int  # the confident joint's off-diagonal count: how many labels look wrong
    judged: np.ndarray  # per row: whether it could be judged (its class has another photo)


def _fold(
    x: np.ndarray, labels: np.ndarray, C: float, fold: tuple[np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One fold: (held-out rows, the classes the probe knows, their probabilities)."""
    fit_rows, held_out = fold
    y = labels[fit_rows]
    classes = np.unique(y)
    if classes.size < 2:
        return held_out, classes, np.ones((len(held_out), classes.size))
    # in a worker process as much as here: one BLAS thread, no convergence chatter
    with warnings.catch_warnings(), threadpool_limits(BLAS_THREADS):
        warnings.filterwarnings("ignore", category=ConvergenceWarning)
        scaler = StandardScaler().fit(x[fit_rows])
        model = LogisticRegression(C=C, max_iter=MAX_ITER).fit(scaler.transform(x[fit_rows]), y)
        return held_out, model.classes_, model.predict_proba(scaler.transform(x[held_out]))


def out_of_fold_probabilities(
    x: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    folds: int,
    C: float,
    seed: int,
    map_folds: Callable[..., Iterable] = map,
) -> tuple[np.ndarray, int]:
    """Each row's class probabilities from a logistic probe fitted without it; and the number
    of folds used (fewer than asked when no class has that many photos).

    The folds are independent fits: ``map_folds`` (``map``, or a process pool's, see
    :func:`fold_workers`) runs them, one after the other or side by side, with the same result
    either way."""
    labels = np.asarray(labels)
    probs = np.zeros((len(labels), n_classes))
    if not len(labels):
        return probs, 0
    folds = int(min(folds, np.bincount(labels).max()))
    if folds < 2 or np.unique(labels).size < 2:
        probs[np.arange(len(labels)), labels] = 1.0  # nothing to learn from: no verdict
        return probs, 0
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        # a class with fewer photos than folds is simply absent from some folds
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        splits = list(splitter.split(x, labels))
        for held_out, classes, fold_probs in map_folds(partial(_fold, x, labels, C), splits):
            probs[np.ix_(held_out, classes)] = fold_probs
    return probs, folds


@contextmanager
def fold_workers(workers: int) -> Iterator[Callable[..., Iterable]]:
    """A ``map`` that runs the folds in ``workers`` processes forked now, or the built-in
    ``map`` where that cannot help (one worker, or no ``fork``: macOS, Windows).

    Processes, not threads: a probe fit spends much of its time holding the GIL (the L-BFGS
    bookkeeping over ~47,000 coefficients, sklearn's own Python), so two threads fit ten folds
    only 1.35x faster than one. Forked before the caller starts a thread of its own (call this
    first), so each child is a copy of a single-threaded process; each fold's data reaches its
    worker pickled, and the fit there is the same code on the same numbers as in-process."""
    if workers < 2 or sys.platform != "linux":
        yield map
        return
    with ProcessPoolExecutor(workers, mp_context=get_context("fork")) as pool:
        pool.submit(int).result()  # with fork, the first task starts every worker: now
        yield partial(pool.map, chunksize=1)


def confident_learning(labels: np.ndarray, probs: np.ndarray) -> LabelIssues:
    """Confident learning on out-of-sample ``probs`` (see the module docstring)."""
    labels = np.asarray(labels)
    n, k = probs.shape
    counts = np.bincount(labels, minlength=k)
    thresholds = np.full(k, np.inf)
    present = counts > 0
    sums = np.bincount(labels, weights=probs[np.arange(n), labels], minlength=k)
    thresholds[present] = sums[present] / counts[present]
    above = probs >= thresholds[None, :] - TOLERANCE
    confident = np.where(above, probs, -1.0).argmax(axis=1)
    counted = above.any(axis=1)
    judged = counts[labels] >= 2
    off_diagonal = counted & (confident != labels) & judged
    self_confidence = probs[np.arange(n), labels]
    estimated = int(off_diagonal.sum())
    candidates = np.flatnonzero(judged)
    order = candidates[np.argsort(self_confidence[candidates], kind="stable")]
    others = probs.copy()
    others[np.arange(n), labels] = -1.0
    suggested = np.where(off_diagonal, confident, others.argmax(axis=1))
    return LabelIssues(
        rows=order[:estimated],
        suggested=suggested,
        self_confidence=self_confidence,
        thresholds=thresholds,
        estimated=estimated,
        judged=judged,
    )
