"""Every photo's cosine similarity to every other, in one chunked pass: what the outlier density
and the near-duplicate candidates both read.

Both detectors need the same N x N matrix of cosines between the penultimate features, and on
the full data set (7,400 photos, 1,280 features) each product of it took ~2.5 s on one core:
computing it once, and keeping only a chunk of rows in memory, halves that.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CHUNK = 512  # rows of the similarity matrix in memory at once (512 x N float32)
MAX_CANDIDATES = 50  # per photo: the most similar; a burst of copies larger than this is rare


@dataclass
class Similarity:
    """What one pass found: each row's mean cosine distance to its ``k`` nearest other rows
    (zeros when ``k`` is 0), and the candidate pairs ``(i, j, cosine)``, ``i < j``, with cosine
    at least the threshold (per photo at most ``limit`` partners after it, most similar first)."""

    neighbour_distance: np.ndarray
    k: int
    candidates: list[tuple[int, int, float]]


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (float32); a zero row stays zero (similar to nothing)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def _above(block: np.ndarray, rows: np.ndarray, threshold: float, limit: int) -> list:
    out = []
    for offset, row in enumerate(block):
        found = np.flatnonzero(row >= threshold)
        if found.size > limit:
            found = found[np.argsort(-row[found], kind="stable")[:limit]]
        out += [(int(rows[offset]), int(j), float(row[j])) for j in np.sort(found)]
    return out


def one_pass(
    embeddings: np.ndarray, k: int, threshold: float, limit: int = MAX_CANDIDATES
) -> Similarity:
    """The neighbour distances (``k`` nearest, fewer when the data set is smaller) and the
    candidate pairs at ``threshold``, from one product per chunk of rows."""
    unit = unit_rows(embeddings)
    n = len(unit)
    k = max(0, min(k, n - 1))
    distance = np.zeros(n)
    candidates: list[tuple[int, int, float]] = []
    for start in range(0, n, CHUNK):
        block = unit[start : start + CHUNK] @ unit.T
        rows = np.arange(start, min(start + CHUNK, n))
        block[np.arange(len(rows)), rows] = -np.inf  # not its own neighbour
        if k:
            nearest = -np.partition(-block, k - 1, axis=1)[:, :k]
            distance[rows] = 1.0 - nearest.mean(axis=1)
        block[np.arange(n)[None, :] <= rows[:, None]] = -np.inf  # each pair once: j > i
        candidates += _above(block, rows, threshold, limit)
    return Similarity(distance, k, candidates)
