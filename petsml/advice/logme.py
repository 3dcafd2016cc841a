"""LogME: how well frozen features will transfer to the labels, without training a classifier.

You, Liu, Wang, Long, "LogME: Practical Assessment of Pre-trained Models for Transfer Learning",
ICML 2021. Each class's one-hot column ``y`` is modelled as Bayesian linear regression on the
features ``F`` (n x D): ``w ~ N(0, I/alpha)``, ``y | F, w ~ N(F w, I/beta)``. The score is the
log marginal likelihood (evidence) ``log p(y | F, alpha, beta)`` at the ``alpha, beta`` that
maximise it, divided by ``n`` and averaged over classes. Higher = the features explain the
labels with a simpler linear model = better transfer, and the score ranks backbones without
fitting anything per backbone beyond one SVD.

The maximisation is the paper's fixed-point iteration (MacKay's), computed on the thin SVD
``F = U S V^T`` once for all classes (sigma_i = s_i^2, z = U^T y):

    gamma = sum_i beta sigma_i / (alpha + beta sigma_i)
    |m|^2 = sum_i (beta s_i z_i / (alpha + beta sigma_i))^2
    |F m - y|^2 = |y|^2 - |z|^2 + sum_i (alpha z_i / (alpha + beta sigma_i))^2
    alpha <- gamma / |m|^2,   beta <- (n - gamma) / |F m - y|^2

and the evidence (with ``A = alpha I + beta F^T F``, whose D - rank eigenvalues are alpha):

    L = n/2 log beta + D/2 log alpha - n/2 log 2 pi - beta/2 |F m - y|^2 - alpha/2 |m|^2
        - 1/2 log |A|
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits

MAX_ITER = 100
RTOL = 1e-3  # relative change of alpha / beta at which the fixed point is reached
_TINY = 1e-12
BLAS_THREADS = 1  # as the probes: small problems, a shared CPU


@dataclass(frozen=True)
class _Spectrum:
    """The SVD pieces every class shares: sigma (squared singular values) and sizes."""

    u: np.ndarray  # (n, r)
    sigma: np.ndarray  # (r,)
    n: int
    d: int


def _spectrum(features: np.ndarray) -> _Spectrum:
    """U and sigma of the thin SVD, from the eigendecomposition of the smaller Gram matrix
    (n x n or D x D): the same numbers, and far cheaper than an SVD when n and D differ."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or not np.isfinite(f).all():
        raise ValueError(f"LogME needs a finite 2-D feature matrix, got shape {f.shape}")
    n, d = f.shape
    with threadpool_limits(BLAS_THREADS):
        if n <= d:
            sigma, u = np.linalg.eigh(f @ f.T)
        else:
            sigma, v = np.linalg.eigh(f.T @ f)
        keep = sigma > max(float(sigma.max(initial=0.0)), 1.0) * 1e-12  # rank: drop null space
        sigma = sigma[keep]
        u = u[:, keep] if n <= d else (f @ v[:, keep]) / np.sqrt(sigma)
    return _Spectrum(u=u, sigma=sigma, n=n, d=d)


def _terms(spec: _Spectrum, z: np.ndarray, y2: float, alpha: float, beta: float):
    """(gamma, |m|^2, |F m - y|^2) at ``alpha, beta``."""
    denom = alpha + beta * spec.sigma
    gamma = float(np.sum(beta * spec.sigma / denom))
    m2 = float(np.sum((beta * np.sqrt(spec.sigma) * z / denom) ** 2))
    residual = float(max(y2 - np.sum(z * z), 0.0) + np.sum((alpha * z / denom) ** 2))
    return gamma, m2, residual


def _evidence(spec: _Spectrum, z: np.ndarray, y2: float, alpha: float, beta: float) -> float:
    _, m2, residual = _terms(spec, z, y2, alpha, beta)
    log_det = np.sum(np.log(alpha + beta * spec.sigma)) + (spec.d - spec.sigma.size) * np.log(alpha)
    return float(
        spec.n / 2 * np.log(beta)
        + spec.d / 2 * np.log(alpha)
        - spec.n / 2 * np.log(2 * np.pi)
        - beta / 2 * residual
        - alpha / 2 * m2
        - log_det / 2
    )


def _maximise(spec: _Spectrum, y: np.ndarray) -> tuple[float, float, float]:
    """(evidence, alpha, beta) at the fixed point for one target column ``y``."""
    z = spec.u.T @ y
    y2 = float(y @ y)
    alpha, beta = 1.0, 1.0
    for _ in range(MAX_ITER):
        gamma, m2, residual = _terms(spec, z, y2, alpha, beta)
        new_alpha = gamma / max(m2, _TINY)
        new_beta = max(spec.n - gamma, _TINY) / max(residual, _TINY)
        done = abs(new_alpha - alpha) <= RTOL * alpha and abs(new_beta - beta) <= RTOL * beta
        alpha, beta = max(new_alpha, _TINY), max(new_beta, _TINY)
        if done:
            break
    return _evidence(spec, z, y2, alpha, beta), alpha, beta


def log_evidence(features: np.ndarray, y: np.ndarray, alpha: float, beta: float) -> float:
    """``log p(y | F, alpha, beta)`` for one target column (the quantity LogME maximises)."""
    spec = _spectrum(features)
    y = np.asarray(y, dtype=np.float64)
    return _evidence(spec, spec.u.T @ y, float(y @ y), alpha, beta)


def fit_column(features: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """(evidence, alpha, beta) maximised for one target column; for tests and diagnostics."""
    return _maximise(_spectrum(features), np.asarray(y, dtype=np.float64))


def logme(features: np.ndarray, labels: np.ndarray) -> float:
    """The LogME score of ``features`` (n x D) for integer ``labels`` (n,): mean evidence / n."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.shape[0] != np.asarray(features).shape[0]:
        raise ValueError("labels must be one integer per feature row")
    classes = np.unique(labels)
    if classes.size < 2:
        raise ValueError("LogME needs at least two classes")
    spec = _spectrum(features)
    scores = [_maximise(spec, (labels == k).astype(np.float64))[0] for k in classes]
    return float(np.mean(scores) / spec.n)
