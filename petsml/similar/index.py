"""The neighbour index: L2-normalised embeddings plus who each row is, and exact cosine search.

One ``.npz`` file (no pickles): ``embeddings`` (N, D) float32 with unit rows, ``image_id``,
``breed`` (the row's breed) and ``files`` (the photo's path under ``data/raw``). Search is
one matrix product against every row (exact, not approximate): ``benchmarks/similar.py``
measured it against scikit-learn's brute-force ``NearestNeighbors`` and faiss' ``IndexFlatIP``
at 7,349 and 100,000 rows (docs/BENCHMARKS.md, "Similar photos"); at this size a matmul is as
fast and needs no extra dependency. Distance is cosine distance, ``1 - cos``, in [0, 2].
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from petsml.errors import PetsError
from petsml.io import atomic_path

FIELDS = ("embeddings", "image_id", "breed", "file")
_KEYS = {"embeddings": "embeddings", "image_id": "image_id", "breed": "breed", "file": "files"}
_CHUNK = 4096  # query rows per matrix product: memory stays flat for large batches


class IndexFileError(PetsError):
    """The index file is missing, unreadable or inconsistent."""


def normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (float32); an all-zero row stays zero."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


@dataclass(frozen=True)
class Neighbour:
    """One hit: which photo, its breed, its path under data/raw and the cosine distance."""

    image_id: str
    breed: str
    file: str
    distance: float

    def as_dict(self) -> dict[str, str | float]:
        return {"image_id": self.image_id, "breed": self.breed, "file": self.file,
                "distance": self.distance}  # fmt: skip


@dataclass(frozen=True)
class NeighbourIndex:
    embeddings: np.ndarray  # (N, D) float32, unit rows
    image_id: np.ndarray  # (N,) str
    breed: np.ndarray  # (N,) str
    file: np.ndarray  # (N,) str

    @classmethod
    def build(cls, embeddings, image_id, breed, file) -> NeighbourIndex:
        embeddings = normalise(embeddings)
        columns = [np.asarray(list(c), dtype=str) for c in (image_id, breed, file)]
        if embeddings.ndim != 2 or any(len(c) != len(embeddings) for c in columns):
            raise ValueError(
                f"embeddings {embeddings.shape} and {[len(c) for c in columns]} labels disagree"
            )
        return cls(embeddings, *columns)

    def __len__(self) -> int:
        return int(self.embeddings.shape[0])

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    def save(self, path: str | Path) -> None:
        """Write the ``.npz`` atomically."""
        with atomic_path(path, suffix=".npz") as tmp, open(tmp, "wb") as handle:
            np.savez(handle, **{_KEYS[name]: getattr(self, name) for name in FIELDS})

    @classmethod
    def load(cls, path: str | Path) -> NeighbourIndex:
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {name: data[_KEYS[name]] for name in FIELDS}
        except (OSError, ValueError, KeyError) as error:
            raise IndexFileError(f"{path}: not a neighbour index ({error})") from None
        return cls.build(**arrays)

    def search(self, queries: np.ndarray, k: int, *, exclude_self: bool = False):
        """(distances, rows), each (Q, k'), nearest first; ``k' = min(k, N)``.

        ``queries`` are raw embeddings (normalised here). ``exclude_self``: the queries are this
        index's own rows in order, and row ``i`` is not its own neighbour (leave-one-out).
        """
        queries = normalise(np.atleast_2d(queries))
        if queries.shape[1] != self.dim:
            raise IndexFileError(
                f"query embeddings have {queries.shape[1]} dimensions, the index {self.dim}: "
                "the index was built with another backbone"
            )
        k = max(0, min(int(k), len(self) - (1 if exclude_self else 0)))
        dist_out = np.empty((len(queries), k), np.float32)
        rows_out = np.empty((len(queries), k), np.int64)
        if k == 0:
            return dist_out, rows_out
        for start in range(0, len(queries), _CHUNK):
            sims = queries[start : start + _CHUNK] @ self.embeddings.T
            if exclude_self:
                own = np.arange(start, start + len(sims))
                sims[np.arange(len(sims)), own] = -np.inf
            part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
            top = np.take_along_axis(sims, part, axis=1)
            order = np.argsort(-top, axis=1, kind="stable")
            rows_out[start : start + len(sims)] = np.take_along_axis(part, order, axis=1)
            dist_out[start : start + len(sims)] = 1.0 - np.take_along_axis(top, order, axis=1)
        return np.clip(dist_out, 0.0, 2.0), rows_out

    def neighbours(self, queries: np.ndarray, k: int) -> list[list[Neighbour]]:
        """The ``k`` nearest photos of each query, nearest first."""
        distances, rows = self.search(queries, k)
        return [
            [Neighbour(str(self.image_id[r]), str(self.breed[r]), str(self.file[r]), float(d))
             for d, r in zip(dist, row, strict=True)]
            for dist, row in zip(distances, rows, strict=True)
        ]  # fmt: skip

    def leave_one_out_agreement(self) -> float:
        """Share of rows whose nearest other row has the same breed (a sanity figure)."""
        if len(self) < 2:
            return float("nan")
        _, rows = self.search(self.embeddings, 1, exclude_self=True)
        return float(np.mean(self.breed[rows[:, 0]] == self.breed))
