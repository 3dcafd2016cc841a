"""Feedback: a user's "it is X" on one answer, and a kept photo with the label it was given.

A :class:`Feedback` carries a copy of the prediction it answers (model, version, predicted
class, time): the store rotates predictions out, and accuracy over time must outlive them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Feedback:
    """One "it is X" answer, with a copy of the prediction it answers."""

    prediction_id: str
    time: float
    label: str
    source: str
    model_name: str
    model_version: str
    predicted: str
    prediction_time: float

    @property
    def correct(self) -> bool:
        return self.label == self.predicted


@dataclass(frozen=True)
class FeedbackPhoto:
    """A kept photo with the label feedback gave it (what the folder export writes)."""

    prediction_id: str
    label: str
    format: str
    sha256: str
    data: bytes
