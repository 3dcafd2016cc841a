"""The 2x2 table: how much data x how ImageNet-like it is -> which strategy to ship.

The classic transfer-learning rule of thumb (e.g. CS231n's "Transfer Learning" notes), with
both axes measured instead of assumed:

=========  ===========================  ==================================================
           similar to ImageNet          unlike ImageNet
=========  ===========================  ==================================================
small      feature_extractor            svm_early, on the block where the probe peaks
large      finetune_top                 finetune_full
=========  ===========================  ==================================================

*Small* is the median number of train images per class below ``advise.small_below``.
*Unlike* is the layer-wise probe curve peaking before the last block by more than
``advise.similar_tolerance``: the deepest, most ImageNet-specific features then explain the
labels worse than earlier, more generic ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

STRATEGY_OF_CELL = {
    ("small", "similar"): "feature_extractor",
    ("small", "unlike"): "svm_early",
    ("large", "similar"): "finetune_top",
    ("large", "unlike"): "finetune_full",
}

WHY = {
    "feature_extractor": "few images and ImageNet-like photos: the pretrained penultimate "
    "features already separate the classes; a linear head on them cannot overfit much.",
    "svm_early": "few images and photos unlike ImageNet: the last blocks' features are too "
    "ImageNet-specific; a linear SVM on the block where the probe peaks uses the more generic "
    "features without training the network.",
    "finetune_top": "enough images and ImageNet-like photos: keep the generic lower blocks "
    "frozen and adapt the top blocks and the head.",
    "finetune_full": "enough images and photos unlike ImageNet: every block needs to adapt; "
    "fine-tune the whole network (with layer-wise decaying learning rates).",
}


@dataclass(frozen=True)
class Decision:
    size: str  # small | large
    similarity: str  # similar | unlike
    strategy: str
    early_block: int | None  # for svm_early: the block to use

    @property
    def cell(self) -> str:
        return f"{self.size}+{self.similarity}"

    @property
    def why(self) -> str:
        return WHY[self.strategy]


def size_verdict(median_per_class: float, small_below: int) -> str:
    """``small`` when the median class has fewer than ``small_below`` train images."""
    return "small" if median_per_class < small_below else "large"


def peak_block(accuracies: Sequence[float], tolerance: float) -> int:
    """The block the probe curve peaks at; the last block unless an earlier one beats it by
    more than ``tolerance`` (small validation sets make differences below that noise)."""
    acc = np.asarray(accuracies, dtype=float)
    if acc.size == 0:
        raise ValueError("empty probe curve")
    last = acc.size - 1
    best = int(np.argmax(acc))
    return best if acc[best] > acc[last] + tolerance else last


def similarity_verdict(accuracies: Sequence[float], tolerance: float) -> str:
    """``unlike`` when the probe curve peaks before the last block (see :func:`peak_block`)."""
    return "unlike" if peak_block(accuracies, tolerance) < len(accuracies) - 1 else "similar"


def decide(
    median_per_class: float,
    rich_curve: Sequence[float],
    mean_curve: Sequence[float],
    small_below: int,
    tolerance: float,
) -> Decision:
    """The cell and strategy; ``rich_curve`` (mean+std+grid pooling) judges similarity,
    ``mean_curve`` (the mean pooling svm_early is fitted on) picks svm_early's block."""
    size = size_verdict(median_per_class, small_below)
    similarity = similarity_verdict(rich_curve, tolerance)
    strategy = STRATEGY_OF_CELL[(size, similarity)]
    block = best_block(mean_curve) if strategy == "svm_early" else None
    return Decision(size, similarity, strategy, block)


def best_block(accuracies: Sequence[float]) -> int:
    """The block with the highest probe accuracy (the first of equals)."""
    if not len(accuracies):
        raise ValueError("empty probe curve")
    return int(np.argmax(np.asarray(accuracies, dtype=float)))


def more_data_helps(curve: Sequence[float], min_gain: float) -> bool:
    """Whether the learning curve's last step still gained more than ``min_gain``."""
    return len(curve) >= 2 and curve[-1] - curve[-2] > min_gain
