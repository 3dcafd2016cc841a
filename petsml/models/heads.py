"""Linear heads on cached features (numpy in, numpy out) for the frozen-feature strategies.

Each fit standardises the features, tries every ``C`` on the training set, keeps the one with
the best validation accuracy (ties -> the smallest, most regularised ``C``) and returns the
result as one affine map, ``logits = X @ W.T + b``, with the scaler (and, for the SVM, a
softmax temperature fitted on the validation scores) folded in, so the head drops into a
``torch.nn.Linear`` unchanged.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import minimize, minimize_scalar
from scipy.special import log_softmax, softmax
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from petsml.errors import PetsError

log = logging.getLogger(__name__)

SEED = 0
# The solvers' BLAS calls run on one thread: measured on the 2-core machines, 2 BLAS threads
# made the SVM 5-7x slower whenever anything else was running (and the 37 x 1280 problems are
# too small for threads to pay off much even on an idle machine).
BLAS_THREADS = 1
ABSENT_CLASS_BIAS = -1e4  # logit offset for a class with no training example


class HeadError(PetsError):
    """The features or labels cannot train a head (shapes, too few classes, non-finite)."""


@dataclass
class HeadFit:
    """A fitted linear head: ``logits = X @ W.T + b`` on raw (unscaled) features."""

    W: np.ndarray  # (n_classes, d), float64
    b: np.ndarray  # (n_classes,)
    C: float
    val_accuracy: float
    search: list[dict[str, float]]  # [{"C", "val_accuracy"}] in the order tried
    seconds: float
    temperature: float = 1.0  # already folded into W and b
    estimator: Any = field(default=None, repr=False)  # (StandardScaler, fitted model) at C

    def logits(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(X, dtype=np.float64) @ self.W.T + self.b

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.logits(X).argmax(axis=1)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return softmax(self.logits(X), axis=1)


class LinearSVM:
    """One-vs-rest linear SVM, LinearSVC's objective solved with L-BFGS on dense arrays.

    Per class ``k`` it minimises ``0.5 * (|w_k|^2 + b_k^2) + C * sum_i max(0, 1 - y_ik * s_ik)^2``
    with ``s = X @ W.T + b`` and ``y_ik = +-1`` (squared hinge, intercept regularised: exactly
    scikit-learn's ``LinearSVC`` defaults). liblinear is slow on dense 1000+-wide features (10 s
    to minutes per C for 37 classes and ~3000 images); this solves all classes at once with
    dense BLAS, warm-starts along the C grid, and is deterministic.
    """

    def __init__(
        self,
        C: float = 1.0,
        max_iter: int = 3000,
        tol: float = 1e-5,
        init: tuple[np.ndarray, np.ndarray] | None = None,
    ):
        self.C = C
        self.max_iter = max_iter
        self.tol = tol
        self.init = init  # (coef, intercept) to start from, e.g. the fit at a smaller C

    def fit(self, X: np.ndarray, y: np.ndarray) -> LinearSVM:
        X = np.asarray(X, dtype=np.float64)
        self.classes_ = np.unique(y)
        if len(self.classes_) == 2:  # one score, positive for classes_[1] (as scikit-learn)
            Y = np.where(y == self.classes_[1], 1.0, -1.0)[:, None]
        else:
            Y = np.where(y[:, None] == self.classes_[None, :], 1.0, -1.0)
        n, d = X.shape
        k = Y.shape[1]
        C = float(self.C)

        def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
            W = theta[: k * d].reshape(k, d)
            b = theta[k * d :]
            margin = 1.0 - Y * (X @ W.T + b)
            active = np.maximum(margin, 0.0)
            loss = 0.5 * (np.sum(W * W) + np.sum(b * b)) + C * np.sum(active * active)
            g = -2.0 * C * Y * active  # d loss / d score
            grad_W = W + g.T @ X
            grad_b = b + g.sum(axis=0)
            return float(loss), np.concatenate([grad_W.ravel(), grad_b])

        start = np.zeros(k * (d + 1))
        # tol is relative to the gradient at zero, which grows with C and the number of samples
        scale = float(np.abs(objective(start)[1]).max()) or 1.0
        if self.init is not None and self.init[0].shape == (k, d):
            start = np.concatenate([self.init[0].ravel(), self.init[1]])
        result = minimize(
            objective,
            start,
            jac=True,
            method="L-BFGS-B",
            options={"maxiter": self.max_iter, "gtol": self.tol * scale, "ftol": 1e-11},
        )
        self.coef_ = result.x[: k * d].reshape(k, d)
        self.intercept_ = result.x[k * d :]
        self.n_iter_ = int(result.nit)
        if not result.success:
            warnings.warn(
                f"LinearSVM did not converge: {result.message}", ConvergenceWarning, stacklevel=2
            )
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        scores = np.asarray(X, dtype=np.float64) @ self.coef_.T + self.intercept_
        return scores[:, 0] if scores.shape[1] == 1 else scores

    def predict(self, X: np.ndarray) -> np.ndarray:
        scores = self.decision_function(X)
        if scores.ndim == 1:
            return self.classes_[(scores > 0).astype(int)]
        return self.classes_[scores.argmax(axis=1)]


def _check(
    Xtr: np.ndarray, ytr: np.ndarray, Xval: np.ndarray, yval: np.ndarray, Cs: Sequence[float]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[float], int]:
    Xtr = np.asarray(Xtr, dtype=np.float64)
    Xval = np.asarray(Xval, dtype=np.float64)
    ytr = np.asarray(ytr)
    yval = np.asarray(yval)
    if Xtr.ndim != 2 or Xval.ndim != 2 or Xtr.shape[1] != Xval.shape[1]:
        raise HeadError(f"features must be 2-D with equal widths, got {Xtr.shape} and {Xval.shape}")
    if ytr.shape != (len(Xtr),) or yval.shape != (len(Xval),):
        raise HeadError(
            f"labels do not match the features: {ytr.shape} for {Xtr.shape}, "
            f"{yval.shape} for {Xval.shape}"
        )
    if len(Xval) == 0:
        raise HeadError("the validation split is empty; C is chosen on it")
    for name, y in (("train", ytr), ("val", yval)):
        if not np.issubdtype(y.dtype, np.integer) or (y.size and y.min() < 0):
            raise HeadError(f"{name} labels must be class ids 0..K-1, got dtype {y.dtype}")
    for name, X in (("train", Xtr), ("val", Xval)):
        if not np.isfinite(X).all():
            raise HeadError(f"{name} features contain NaN/inf; re-run the featurize stage")
    if len(np.unique(ytr)) < 2:
        raise HeadError("the training split holds fewer than 2 classes; a head needs 2 or more")
    cs = [float(c) for c in Cs]
    if not cs or any(not np.isfinite(c) or c <= 0 for c in cs):
        raise HeadError(f"C values must be positive numbers, got {list(Cs)!r}")
    n_classes = int(max(ytr.max(), yval.max())) + 1
    return Xtr, ytr.astype(np.int64), Xval, yval.astype(np.int64), sorted(set(cs)), n_classes


def _fold(
    scaler: StandardScaler, coef: np.ndarray, intercept: np.ndarray, classes: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """(W, b) on raw features for all ``k`` classes from a model fit on standardised ones."""
    coef = np.asarray(coef, dtype=np.float64)
    intercept = np.asarray(intercept, dtype=np.float64).reshape(-1)
    if coef.shape[0] == 1:  # binary: one score z for classes_[1]; softmax([-z/2, z/2]) = sigmoid(z)
        coef = np.vstack([-coef[0] / 2, coef[0] / 2])
        intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
    W_std = coef / scaler.scale_
    b_std = intercept - W_std @ scaler.mean_
    W = np.zeros((k, coef.shape[1]))
    b = np.full(k, ABSENT_CLASS_BIAS)
    W[classes] = W_std
    b[classes] = b_std
    missing = sorted(set(range(k)) - set(classes.tolist()))
    if missing:
        log.warning("classes %s have no training example; they are never predicted", missing)
    return W, b


def _search(
    make: Any, Xtr: np.ndarray, ytr: np.ndarray, Xval: np.ndarray, yval: np.ndarray, cs: list[float]
) -> tuple[Any, StandardScaler, float, float, list[dict[str, float]]]:
    scaler = StandardScaler().fit(Xtr)
    Ztr, Zval = scaler.transform(Xtr), scaler.transform(Xval)
    search: list[dict[str, float]] = []
    best = None
    model = None
    for c in cs:
        model = make(c, model)
        with warnings.catch_warnings(record=True) as caught, threadpool_limits(BLAS_THREADS):
            warnings.simplefilter("always", ConvergenceWarning)
            model.fit(Ztr, ytr)
        if any(issubclass(w.category, ConvergenceWarning) for w in caught):
            log.warning("C=%g: the solver did not fully converge", c)
        acc = float((model.predict(Zval) == yval).mean())
        search.append({"C": c, "val_accuracy": acc})
        log.info("C=%g: val accuracy %.4f", c, acc)
        if best is None or acc > best[1]:
            best = (model, acc, c)
    assert best is not None
    return best[0], scaler, best[2], best[1], search


def fit_logistic(
    Xtr: np.ndarray, ytr: np.ndarray, Xval: np.ndarray, yval: np.ndarray, Cs: Sequence[float]
) -> HeadFit:
    """StandardScaler + multinomial logistic regression; ``C`` chosen by validation accuracy."""
    started = time.perf_counter()
    Xtr, ytr, Xval, yval, cs, k = _check(Xtr, ytr, Xval, yval, Cs)

    def make(c: float, previous: Any) -> LogisticRegression:
        return LogisticRegression(C=c, max_iter=2000, tol=1e-4, random_state=SEED)

    model, scaler, c, acc, search = _search(make, Xtr, ytr, Xval, yval, cs)
    W, b = _fold(scaler, model.coef_, model.intercept_, model.classes_, k)
    seconds = time.perf_counter() - started
    return HeadFit(W, b, c, acc, search, seconds, 1.0, (scaler, model))


def _fit_temperature(scores: np.ndarray, y: np.ndarray) -> float:
    """T minimising the validation NLL of ``softmax(scores / T)``."""

    def nll(log_t: float) -> float:
        logp = log_softmax(scores / np.exp(log_t), axis=1)
        return float(-logp[np.arange(len(y)), y].mean())

    result = minimize_scalar(nll, bounds=(np.log(1e-3), np.log(1e3)), method="bounded")
    return float(np.exp(result.x))


def fit_linear_svm(
    Xtr: np.ndarray, ytr: np.ndarray, Xval: np.ndarray, yval: np.ndarray, Cs: Sequence[float]
) -> HeadFit:
    """StandardScaler + linear SVM (:class:`LinearSVM`, one-vs-rest squared hinge); ``C`` chosen
    by validation accuracy.

    The decision scores are turned into calibrated probabilities by a softmax temperature fitted
    on the validation set (folded into ``W`` and ``b``).
    """
    started = time.perf_counter()
    Xtr, ytr, Xval, yval, cs, k = _check(Xtr, ytr, Xval, yval, Cs)

    def make(c: float, previous: LinearSVM | None) -> LinearSVM:
        # warm start from the fit at the next smaller C (the grid is tried in increasing order)
        init = None if previous is None else (previous.coef_, previous.intercept_)
        return LinearSVM(C=c, init=init)

    model, scaler, c, acc, search = _search(make, Xtr, ytr, Xval, yval, cs)
    W, b = _fold(scaler, model.coef_, model.intercept_, model.classes_, k)
    seen = np.isin(yval, model.classes_)  # a class absent from train has no score to scale
    temperature = _fit_temperature(Xval[seen] @ W.T + b, yval[seen]) if seen.any() else 1.0
    seconds = time.perf_counter() - started
    return HeadFit(
        W / temperature, b / temperature, c, acc, search, seconds, temperature, (scaler, model)
    )


def pad_classes(W: np.ndarray, b: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Pad the head to every class of the task: a breed with no training photo (a subset or a
    mirror) stays in the label space and is simply never predicted."""
    if W.shape[0] >= n_classes:
        return W, b
    pad = n_classes - W.shape[0]
    return (
        np.vstack([W, np.zeros((pad, W.shape[1]))]),
        np.concatenate([b, np.full(pad, ABSENT_CLASS_BIAS)]),
    )
