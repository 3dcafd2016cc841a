"""The 2x2 table: how much data x how ImageNet-like it is -> which strategy to ship.

The classic transfer-learning rule of thumb (e.g. CS231n's "Transfer Learning" notes), with
both axes measured, and the similarity axis decided by a test rather than a bare difference:

=========  ===========================  ==================================================
           similar to ImageNet          unlike ImageNet
=========  ===========================  ==================================================
small      feature_extractor            svm_early, on the block that scored best
large      finetune_top                 finetune_full
=========  ===========================  ==================================================

Which strategy answers which cell is data on the strategy registry's rows
(:mod:`petsml.catalog.strategies`, ``advised_for``).

*Small* is the median number of train images per class below ``advise.small_below``; the
learning curve's last step (with its bootstrap interval) is reported beside it as evidence.

*Similarity* compares what the two frozen strategies would ship, on the same validation photos:
``feature_extractor``'s head on the penultimate features against ``svm_early``'s head on each
earlier block (mean-pooled, as svm_early reads it).

- **unlike**: an earlier block is right significantly more often than the penultimate features
  (one-sided exact McNemar, Bonferroni over the earlier blocks, below ``advise.alpha``): the
  last, most ImageNet-specific features explain the labels worse than more generic ones.
- **similar**: no earlier block beats the penultimate features, *and* the pretrained ImageNet
  classifier recognises the photos (its mean top-1 probability reaches
  ``advise.imagenet_confidence``): label-free evidence that the photos look like its training
  data. Pet photos score ~0.42 on EfficientNet-Lite1, edge renderings of the same pets ~0.20,
  handwritten digits ~0.07.
- **uncertain**: neither - an earlier block leads without a significant margin, or the ImageNet
  classifier does not recognise the photos (or there is none to ask). Then the advice is the
  similar column's strategy, the cheaper bet: it is the standard starting point, and in the
  large row it trains fewer blocks; the evidence for switching would have to be significant.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from petsml.advice.stats import mcnemar_greater
from petsml.catalog import strategies

# Why each cell's strategy, in the cell's own words (the strategy is the registry's row).
WHY = {
    "small+similar": "few images per class and ImageNet-like photos: a linear head on the "
    "pretrained penultimate features cannot overfit much, and no earlier block read the photos "
    "better.",
    "small+uncertain": "few images per class, and no significant evidence that an earlier block "
    "reads the photos better: the penultimate features are the standard start, and switching "
    "would need that evidence.",
    "small+unlike": "few images and photos unlike ImageNet: an earlier block's more generic "
    "features explain the labels significantly better than the last block's; a linear SVM on "
    "that block needs no training of the network.",
    "large+similar": "enough images per class: adapt the top blocks and the head, keeping the "
    "generic lower blocks frozen.",
    "large+uncertain": "enough images per class and no significant evidence that the lower "
    "blocks need to change: adapt the top blocks and the head (the cheaper fine-tune).",
    "large+unlike": "enough images and photos unlike ImageNet: an earlier block beat the last "
    "significantly, so every block needs to adapt; fine-tune the whole network (with "
    "layer-wise decaying learning rates).",
}


@dataclass(frozen=True)
class Probe:
    """One feature set read by its strategy's head: where, and which validation photos it got
    right (in the same order for every probe)."""

    block: int
    correct: np.ndarray  # bool per validation photo

    @property
    def accuracy(self) -> float:
        return float(np.mean(self.correct)) if self.correct.size else 0.0


@dataclass(frozen=True)
class Similarity:
    verdict: str  # similar | unlike | uncertain
    best_block: int | None  # the earlier block that scored best (None: the backbone has none)
    p_value: float | None  # Bonferroni-adjusted: some earlier block beats the penultimate
    reason: str
    tests: list[dict] = field(default_factory=list)  # one row per earlier block


@dataclass(frozen=True)
class Decision:
    size: str  # small | large
    similarity: Similarity
    strategy: str
    early_block: int | None  # for svm_early: the block it reads under model.early_block: auto

    @property
    def cell(self) -> str:
        return f"{self.size}+{self.similarity.verdict}"

    @property
    def why(self) -> str:
        return WHY[self.cell]


def size_verdict(median_per_class: float, small_below: int) -> str:
    """``small`` when the median class has fewer than ``small_below`` train images."""
    return "small" if median_per_class < small_below else "large"


def _points(a: float, b: float) -> str:
    return f"{100 * (a - b):+.1f} points"


def similarity_verdict(
    penultimate: Probe,
    earlier: Sequence[Probe],
    alpha: float,
    imagenet_confidence: float | None,
    min_confidence: float,
) -> Similarity:
    """The similarity axis (the module docstring has the rule)."""
    tests = []
    for probe in earlier:
        p = mcnemar_greater(probe.correct, penultimate.correct)
        tests.append({
            "block": probe.block,
            "val_accuracy": probe.accuracy,
            "p_value": p,
            "p_adjusted": min(1.0, p * len(earlier)),
        })  # fmt: skip
    if not earlier:
        best, p_adj = None, None
    else:
        best_probe = max(earlier, key=lambda probe: (probe.accuracy, -probe.block))
        best, p_adj = best_probe.block, min(t["p_adjusted"] for t in tests)
    pen = penultimate.accuracy
    lead = ""
    if best is not None:
        best_acc = next(t["val_accuracy"] for t in tests if t["block"] == best)
        lead = f"block {best} {best_acc:.3f} vs the penultimate features {pen:.3f} "
        lead += f"({_points(best_acc, pen)}, adjusted p = {p_adj:.3g})"
    if p_adj is not None and p_adj < alpha:
        significant = [t for t in tests if t["p_adjusted"] < alpha]
        block = max(significant, key=lambda t: (t["val_accuracy"], -t["block"]))["block"]
        reason = f"an earlier block reads the photos significantly better: {lead}, below " \
                 f"advise.alpha {alpha:g}"  # fmt: skip
        return Similarity("unlike", block, p_adj, reason, tests)
    beaten = best is not None and best_acc > pen
    if beaten:
        reason = f"an earlier block leads, but not significantly: {lead}"
        return Similarity("uncertain", best, p_adj, reason, tests)
    head = (
        "no ImageNet classifier to ask (only the offline backbones ship one)"
        if imagenet_confidence is None
        else f"the ImageNet classifier's mean top-1 probability on these photos is "
        f"{imagenet_confidence:.3f} (advise.imagenet_confidence {min_confidence:g})"
    )
    no_lead = f"no earlier block beats the penultimate features ({lead})" if lead else (
        "the backbone has no earlier block")  # fmt: skip
    if imagenet_confidence is not None and imagenet_confidence >= min_confidence:
        return Similarity("similar", best, p_adj, f"{no_lead}, and {head}", tests)
    return Similarity("uncertain", best, p_adj, f"{no_lead}, but {head}", tests)


def decide(
    median_per_class: float,
    small_below: int,
    similarity: Similarity,
) -> Decision:
    """The cell and the strategy; svm_early's block is the best earlier block either way."""
    size = size_verdict(median_per_class, small_below)
    strategy = strategies.for_cell(f"{size}+{similarity.verdict}")
    return Decision(size, similarity, strategy, similarity.best_block)
