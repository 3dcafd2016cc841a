"""A window: the recent predictions of one model version, as arrays the detectors compare.

The store returns one (:meth:`petsml.monitoring.store.MonitorStore.window`); the reference is the
same shape (:class:`petsml.monitoring.reference.Reference`), so every detector reads both alike.
:meth:`Window.deduplicated` keeps the first record of each photo (content hash): a client that
retries, or polls with one photo, would otherwise make ten copies look like ten samples, and
every test here assumes independent samples (a duplicate inflates KS and MMD alike).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np


@dataclass(frozen=True)
class Sample:
    """Arrays the detectors read, one row per photo: shared by windows and the reference."""

    class_names: tuple[str, ...]
    probabilities: np.ndarray  # (N, K) float32
    embeddings: np.ndarray  # (N, D) float32; (N, 0) when none were recorded
    width: np.ndarray  # (N,) int
    height: np.ndarray  # (N,) int
    format: np.ndarray  # (N,) str
    greyscale: np.ndarray  # (N,) bool

    def __len__(self) -> int:
        return int(self.probabilities.shape[0])

    @property
    def confidence(self) -> np.ndarray:
        """Top-1 probability of each photo."""
        if not len(self):
            return np.zeros(0, np.float32)
        return self.probabilities.max(axis=1)

    @property
    def predicted(self) -> np.ndarray:
        return self.probabilities.argmax(axis=1) if len(self) else np.zeros(0, np.int64)

    def take(self, rows: np.ndarray) -> Sample:
        """The rows ``rows`` (indices or a boolean mask), in that order."""
        return Sample(
            self.class_names, self.probabilities[rows], self.embeddings[rows], self.width[rows],
            self.height[rows], self.format[rows], self.greyscale[rows],
        )  # fmt: skip


@dataclass(frozen=True)
class Window:
    """Recent predictions: the :class:`Sample` plus who, when and which photo."""

    sample: Sample
    ids: np.ndarray  # (N,) str prediction ids
    times: np.ndarray  # (N,) float UTC seconds, oldest first
    sha256: np.ndarray  # (N,) str content hashes
    model_name: str
    model_version: str

    def __len__(self) -> int:
        return len(self.sample)

    @property
    def n_unique(self) -> int:
        return len(set(self.sha256.tolist()))

    def deduplicated(self) -> Window:
        """The first record of each distinct photo, in time order."""
        _, first = np.unique(self.sha256, return_index=True)
        keep = np.sort(first)
        return replace(
            self, sample=self.sample.take(keep), ids=self.ids[keep], times=self.times[keep],
            sha256=self.sha256[keep],
        )  # fmt: skip


def empty_sample(class_names: tuple[str, ...], dim: int = 0) -> Sample:
    k = len(class_names)
    return Sample(
        class_names, np.zeros((0, k), np.float32), np.zeros((0, dim), np.float32),
        np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, dtype=str),
        np.zeros(0, dtype=bool),
    )  # fmt: skip
