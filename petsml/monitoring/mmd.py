"""Input drift: maximum mean discrepancy between reference and window embeddings, with a
permutation p-value, on PCA-reduced embeddings (Rabanser, Günnemann, Lipton, "Failing Loudly",
NeurIPS 2019: of the multivariate tests they compared on reduced representations, MMD was the
one that detected most shifts; Gretton et al., JMLR 2012, for the statistic).

- Reduction: PCA to ``components`` dimensions: the 1280-d embedding of a few hundred photos
  is mostly noise directions, and the kernel then sees what varies between photos of pets.
  It is fitted on reference and window together, without their labels. Fitted on the
  reference alone (as the paper's source-only reducers are), its top directions follow that
  sample's own noise, so the reference looks more spread out than any new sample and the
  permutation test loses its exactness: in a trial run of ``benchmarks/monitor.py`` (Lite0,
  a 74-photo reference) unchanged windows of 50 got a median p-value of 0.05, not ~0.5.
  A reduction that never sees which row is which is the same under every relabelling.
- Kernel: Gaussian, bandwidth by the median heuristic (the median pairwise distance of the
  pooled sample), recomputed per window, as in the paper.
- Statistic: the unbiased MMD² estimate. p-value: the share of random relabellings of the pooled
  sample whose MMD² reaches the observed one, ``(1 + hits) / (1 + permutations)``: exact under
  "reference and window come from one distribution" whatever the sample sizes, no asymptotics.
  The kernel matrix is computed once; each block of permutations is one matrix product.

numpy only: the statistic is a few lines, and alibi-detect (whose ``MMDDrift`` does the same)
would bring TensorFlow or a second torch stack into the serving image for them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_BLOCK = 256  # permutations per matrix product


@dataclass(frozen=True)
class MMDResult:
    mmd2: float  # unbiased MMD² of the observed split
    p_value: float
    bandwidth: float  # the kernel's sigma (median heuristic)
    components: int  # PCA dimensions used
    permutations: int


@dataclass(frozen=True)
class PCA:
    """Mean and principal directions of the reference (``basis`` rows are unit vectors)."""

    mean: np.ndarray
    basis: np.ndarray  # (k, D)

    @classmethod
    def fit(cls, reference: np.ndarray, components: int) -> PCA:
        """Top directions by an eigendecomposition of the smaller of the Gram (N x N) and
        covariance (D x D) matrices: a few hundred photos of 1280-d embeddings need the
        first, 3x faster than an SVD of the data."""
        reference = np.asarray(reference, dtype=np.float64)
        mean = reference.mean(axis=0)
        centred = reference - mean
        n, d = centred.shape
        k = max(1, min(int(components), n - 1, d))
        if n <= d:
            values, vectors = np.linalg.eigh(centred @ centred.T)
            top = np.argsort(values)[::-1][:k]
            basis = (centred.T @ vectors[:, top]).T
            basis /= np.maximum(np.linalg.norm(basis, axis=1, keepdims=True), 1e-12)
        else:
            values, vectors = np.linalg.eigh(centred.T @ centred)
            basis = vectors[:, np.argsort(values)[::-1][:k]].T
        return cls(mean, basis)

    def transform(self, vectors: np.ndarray) -> np.ndarray:
        return (np.asarray(vectors, dtype=np.float64) - self.mean) @ self.basis.T


def squared_distances(z: np.ndarray) -> np.ndarray:
    sq = np.einsum("ij,ij->i", z, z)
    return np.maximum(sq[:, None] + sq[None, :] - 2.0 * (z @ z.T), 0.0)


def _mmd2(kernel: np.ndarray, rowsum: np.ndarray, total: float, labels: np.ndarray, m: int):
    """Unbiased MMD² for each column of ``labels`` (N, P): 1 marks the ``m`` reference rows."""
    n = kernel.shape[0] - m
    k_a = kernel @ labels
    aka = np.einsum("ij,ij->j", labels, k_a)  # sum over reference-reference pairs (with diag)
    ak1 = labels.T @ rowsum  # reference rows against everything
    bkb = total - 2.0 * ak1 + aka
    akb = ak1 - aka
    # the kernel's diagonal is 1: remove the m (n) self-pairs from the within-set sums
    return (aka - m) / (m * (m - 1)) + (bkb - n) / (n * (n - 1)) - 2.0 * akb / (m * n)


def mmd_test(
    reference: np.ndarray,
    window: np.ndarray,
    permutations: int = 1000,
    rng: np.random.Generator | None = None,
) -> MMDResult:
    """MMD permutation test of two (N, d) samples (already reduced); both need >= 2 rows."""
    x, y = np.asarray(reference, np.float64), np.asarray(window, np.float64)
    m, n = len(x), len(y)
    if m < 2 or n < 2:
        raise ValueError(f"MMD needs at least 2 rows on each side, got {m} and {n}")
    rng = rng or np.random.default_rng(0)
    pooled = np.concatenate([x, y])
    d2 = squared_distances(pooled)
    off = d2[np.triu_indices(len(pooled), k=1)]
    median = float(np.median(off))
    sigma2 = median if median > 0 else float(off.mean() or 1.0)
    kernel = np.exp(-d2 / (2.0 * sigma2))
    rowsum = kernel.sum(axis=1)
    total = float(rowsum.sum())
    observed = np.zeros((m + n, 1))
    observed[:m] = 1.0
    stat = float(_mmd2(kernel, rowsum, total, observed, m)[0])
    hits = 0
    done = 0
    while done < permutations:
        block = min(_BLOCK, permutations - done)
        order = rng.random((m + n, block)).argsort(axis=0)  # a random relabelling per column
        labels = (order < m).astype(np.float64)
        hits += int(np.sum(_mmd2(kernel, rowsum, total, labels, m) >= stat - 1e-12))
        done += block
    p_value = (1 + hits) / (1 + permutations)
    return MMDResult(stat, p_value, float(np.sqrt(sigma2)), x.shape[1], int(permutations))
