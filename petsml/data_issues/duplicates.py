"""Near-duplicates: close in embedding space, confirmed by the photos' own layout.

Two steps, each covering the other's blind spot:

1. **Candidates**: pairs whose penultimate features have a cosine similarity of at least
   ``data_issues.duplicate_cosine``. The frozen features are already cached, so comparing
   every photo with every other is one chunked matrix product. Edits a copy typically receives
   keep the cosine high (on 372 real pets with EfficientNet-Lite1: resized 0.96-1.0, JPEG
   quality 60 0.88-0.99, a 10 % crop 0.90-0.98, mirrored 0.94-0.98, all four at once
   0.81-0.93), but look-alikes come close too (two frames of one burst of a Staffordshire
   terrier: 0.88), so a cosine alone would either miss copies or accuse look-alikes. The
   cosine also keeps unrelated photos away from the hash: at 0.7, two different black
   Newfoundland puppies on white (cosine 0.71) met the hash threshold too.
2. **Confirmation**: the pHash of both photos (:mod:`petsml.data_issues.phash`) differs in
   at most ``data_issues.duplicate_hash_bits`` of 64 bits, either photo mirrored. Unrelated
   photos differ in ~32 bits (a coin per bit: 16 or fewer by chance is 1 in 26,000), and only
   the candidates are compared. A photo with no low-frequency layout
   (texture, flat colour) has no telling hash and confirms no pair.

A confirmed pair whose photos sit in different splits is leakage: the model is scored on a
photo it (or its selection) has seen. :func:`leak_exclusions` decides, per group of copies,
which to keep: the copy in the most held-out split (test, then validation); the train and
validation copies below it are excluded from training, never the test photo, so test results
stay comparable across runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from petsml.data_issues.phash import Hashes, PHash, mirror_distances
from petsml.data_issues.similarity import MAX_CANDIDATES, one_pass

HELD_OUT_FIRST = ("test", "val", "train")  # which copy of a leaked group is kept


@dataclass(frozen=True)
class Pair:
    """Two photos (row indices, ``a < b``) that are near-duplicates."""

    a: int
    b: int
    cosine: float
    bits: int  # pHash bits that differ
    mirrored: bool  # the pHash matched with one photo mirrored


def candidate_pairs(
    embeddings: np.ndarray, threshold: float, limit: int = MAX_CANDIDATES
) -> list[tuple[int, int, float]]:
    """``(i, j, cosine)`` with ``i < j`` and cosine at least ``threshold``; per photo at most
    ``limit`` partners after it, the most similar first (the pipeline reads them from the
    pass it shares with the outliers: :func:`petsml.data_issues.similarity.one_pass`)."""
    return one_pass(embeddings, 0, threshold, limit).candidates


def confirm(
    candidates: Sequence[tuple[int, int, float]],
    hashes: Mapping[int, PHash] | Hashes,
    max_bits: int,
) -> tuple[list[Pair], int]:
    """The candidates whose perceptual hashes (``hashes[row]``) agree, and how many candidates
    could not be judged (a photo without low-frequency layout: an uninformative hash confirms
    nothing). Every pair's two distances (as it is, mirrored) are counted at once."""
    if not candidates:
        return [], 0
    rows = sorted({row for a, b, _ in candidates for row in (a, b)})
    at = {row: i for i, row in enumerate(rows)}
    table = [hashes[row] for row in rows]
    bits = np.array([h.bits for h in table], dtype=bool)
    mirrored = np.array([h.mirrored for h in table], dtype=bool)
    informative = np.array([h.informative for h in table])
    a = np.array([at[pair[0]] for pair in candidates])
    b = np.array([at[pair[1]] for pair in candidates])
    distance, flipped = mirror_distances(bits[a], bits[b], mirrored[b])
    judged = informative[a] & informative[b]
    pairs = [
        Pair(pair[0], pair[1], round(pair[2], 4), int(distance[i]), bool(flipped[i]))
        for i, pair in enumerate(candidates)
        if judged[i] and distance[i] <= max_bits
    ]
    return pairs, int((~judged).sum())


def groups(n: int, pairs: Sequence[Pair]) -> list[list[int]]:
    """Connected groups of copies (two or more rows each), each sorted, in order of first row."""
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for pair in pairs:
        parent[root(pair.a)] = root(pair.b)
    members: dict[int, list[int]] = {}
    for pair in pairs:
        for row in (pair.a, pair.b):
            members.setdefault(root(row), [])
    for row in range(n):
        if root(row) in members:
            members[root(row)].append(row)
    return sorted((sorted(set(rows)) for rows in members.values()), key=lambda rows: rows[0])


def leak_exclusions(copies: Sequence[Sequence[int]], splits: Sequence[str]) -> dict[int, list[int]]:
    """Row -> the kept rows it duplicates, for every row to exclude: in each group spanning
    splits, the copies outside the most held-out split present (test, then val)."""
    out: dict[int, list[int]] = {}
    for group in copies:
        present = {splits[row] for row in group}
        if len(present) < 2:
            continue
        keep = next(split for split in HELD_OUT_FIRST if split in present)
        kept = [row for row in group if splits[row] == keep]
        for row in group:
            if splits[row] != keep:
                out[row] = kept
    return out
