"""Linear heads on features: C chosen on validation, scaler and temperature folded into W, b."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import log_softmax, softmax

from petsml.models.heads import HeadError, LinearSVM, fit_linear_svm, fit_logistic

CS = [0.001, 0.01, 0.1, 1.0]


def blobs(n_classes: int, per_class: int, dim: int = 16, spread: float = 1.0, seed: int = 0):
    """Gaussian blobs with unequal feature scales and offsets (so the scaler matters)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=3.0, size=(n_classes, dim))
    y = np.repeat(np.arange(n_classes), per_class)
    X = centres[y] + rng.normal(scale=spread, size=(len(y), dim))
    X = X * rng.uniform(0.1, 20, size=dim) + rng.uniform(-50, 50, size=dim)
    order = rng.permutation(len(y))
    return X[order].astype(np.float32), y[order]


def split(X: np.ndarray, y: np.ndarray, n_train: int):
    return X[:n_train], y[:n_train], X[n_train:], y[n_train:]


@pytest.fixture(scope="module")
def data():
    return split(*blobs(5, 60), n_train=200)


@pytest.fixture(scope="module")
def fitted(data):
    """Each head fitted once on ``data`` with the C grid given out of order."""
    return {fit: fit(*data, [1.0, 0.001, 0.1, 0.01]) for fit in (fit_logistic, fit_linear_svm)}


@pytest.mark.parametrize("fit", [fit_logistic, fit_linear_svm])
def test_separable_blobs_are_learned_and_C_is_chosen_on_validation(data, fitted, fit):
    Xtr, ytr, Xval, yval = data
    head = fitted[fit]
    assert head.W.shape == (5, Xtr.shape[1]) and head.b.shape == (5,)
    assert head.val_accuracy >= 0.95
    assert [s["C"] for s in head.search] == CS  # tried in increasing order, each recorded
    best = max(s["val_accuracy"] for s in head.search)
    assert head.val_accuracy == best
    assert head.C == min(s["C"] for s in head.search if s["val_accuracy"] == best)
    assert np.mean(head.predict(Xval) == yval) == pytest.approx(head.val_accuracy)
    assert head.seconds > 0


@pytest.mark.parametrize("fit", [fit_logistic, fit_linear_svm])
def test_folded_map_reproduces_sklearn(data, fitted, fit):
    Xtr, ytr, Xval, yval = data
    head = fitted[fit]
    scaler, model = head.estimator
    X = np.vstack([Xtr, Xval]).astype(np.float64)  # the heads compute in float64
    Z = scaler.transform(X)
    np.testing.assert_array_equal(head.predict(X), model.predict(Z))
    scores = model.decision_function(Z)
    np.testing.assert_allclose(head.logits(X) * head.temperature, scores, rtol=1e-9, atol=1e-8)
    if fit is fit_logistic:
        assert head.temperature == 1.0
        np.testing.assert_allclose(head.predict_proba(X), model.predict_proba(Z), atol=1e-10)


@pytest.mark.parametrize("fit", [fit_logistic, fit_linear_svm])
def test_binary_case_gives_two_logits(fit):
    Xtr, ytr, Xval, yval = split(*blobs(2, 60, spread=2.0, seed=3), n_train=80)
    head = fit(Xtr, ytr, Xval, yval, CS)
    assert head.W.shape == (2, Xtr.shape[1]) and head.b.shape == (2,)
    scaler, model = head.estimator
    Z = scaler.transform(Xval.astype(np.float64))
    np.testing.assert_array_equal(head.predict(Xval), model.predict(Z))
    margin = head.logits(Xval) @ np.array([-1.0, 1.0])  # logit(class 1) - logit(class 0)
    np.testing.assert_allclose(margin * head.temperature, model.decision_function(Z), atol=1e-8)
    if fit is fit_logistic:
        np.testing.assert_allclose(head.predict_proba(Xval), model.predict_proba(Z), atol=1e-10)


def test_svm_probabilities_are_calibrated_by_temperature(data, fitted):
    Xtr, ytr, Xval, yval = data
    head = fitted[fit_linear_svm]
    proba = head.predict_proba(Xval)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert head.temperature > 0 and head.temperature != 1.0

    def nll(scale: float) -> float:
        logp = log_softmax(head.logits(Xval) * scale, axis=1)
        return -logp[np.arange(len(yval)), yval].mean()

    # the fitted temperature minimises the validation NLL: any rescaling is worse
    assert nll(1.0) <= min(nll(0.5), nll(2.0), nll(head.temperature))
    raw = softmax(head.logits(Xval) * head.temperature, axis=1)  # temperature 1
    assert nll(1.0) < -np.log(raw[np.arange(len(yval)), yval]).mean()


@pytest.mark.parametrize("n_classes", [2, 4])
def test_linear_svm_solves_liblinears_problem(n_classes):
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    X, y = blobs(n_classes, 40, spread=3.0, seed=5)  # overlapping: many active margins
    Z = StandardScaler().fit_transform(X.astype(np.float64))
    ours = LinearSVM(C=0.5).fit(Z, y)
    ref = LinearSVC(C=0.5, dual=False, tol=1e-10, max_iter=100_000).fit(Z, y)
    assert ours.coef_.shape == ref.coef_.shape
    np.testing.assert_allclose(ours.coef_, ref.coef_, atol=1e-3 * np.abs(ref.coef_).max())
    np.testing.assert_allclose(ours.intercept_, ref.intercept_, atol=1e-3)
    np.testing.assert_array_equal(ours.predict(Z), ref.predict(Z))


@pytest.mark.parametrize("fit", [fit_logistic, fit_linear_svm])
def test_fits_are_deterministic(data, fitted, fit):
    again = fit(*data, CS)
    np.testing.assert_array_equal(again.W, fitted[fit].W)
    np.testing.assert_array_equal(again.b, fitted[fit].b)
    assert again.search == fitted[fit].search


def test_a_class_missing_from_train_is_never_predicted(data):
    Xtr, ytr, Xval, yval = data
    keep = ytr != 2
    head = fit_logistic(Xtr[keep], ytr[keep], Xval, yval, [1.0])
    assert head.W.shape[0] == 5 and not head.W[2].any()
    assert 2 not in head.predict(np.vstack([Xtr, Xval]))


def test_bad_inputs_are_user_errors(data):
    Xtr, ytr, Xval, yval = data
    bad = Xtr.copy()
    bad[0, 0] = np.nan
    with pytest.raises(HeadError, match="NaN"):
        fit_logistic(bad, ytr, Xval, yval, CS)
    with pytest.raises(HeadError, match="fewer than 2 classes"):
        fit_logistic(Xtr, np.zeros_like(ytr), Xval, yval, CS)
    with pytest.raises(HeadError, match="positive"):
        fit_linear_svm(Xtr, ytr, Xval, yval, [0.0])
    with pytest.raises(HeadError, match="labels do not match"):
        fit_logistic(Xtr, ytr[:-1], Xval, yval, CS)
