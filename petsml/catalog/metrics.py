"""The metrics registry: one row per headline metric, and every place that shows one reads it.

A row names its key (in ``reports/metrics.json``, ``reports/comparison.json``, the MLflow
child run, the registry version's tags, the model card and the web page's table), how it is
shown, and where its value comes from: computed on the test logits by a function it names
(``"module:function"`` taking labels, logits and the calibration bins), or read from the
strategy's ``summary.json``. Adding a metric is one row here (or one ``petsml.metrics`` entry
point naming a :class:`MetricRow` in an installed package).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Literal

from petsml.catalog.plugins import installed

ENTRY_POINTS = "petsml.metrics"


@dataclass(frozen=True)
class MetricRow:
    key: str
    header: str  # the comparison table's column header
    fmt: str  # format spec of a cell
    help: str  # what it means (under the table, in the web page's column title)
    source: Literal["test", "summary"]  # computed on the test logits | read from summary.json
    compute: str | None = None  # test: "module:function" (labels, logits, n_bins) -> float
    higher_is_better: bool = True
    tag: bool = False  # on the model card, and a tag of the registered version


BUILT_IN: tuple[MetricRow, ...] = (
    MetricRow("val_accuracy", "val acc", ".3f", "validation accuracy (what selection sees)",
              "summary", tag=True),
    MetricRow("test_accuracy", "test acc", ".3f", "test top-1 accuracy", "test",
              "petsml.evaluation.metrics:top1_accuracy", tag=True),
    MetricRow("test_top5", "top-5", ".3f", "test top-5 accuracy", "test",
              "petsml.evaluation.metrics:top5_accuracy", tag=True),
    MetricRow("test_macro_f1", "macro-F1", ".3f", "test macro-averaged F1", "test",
              "petsml.evaluation.metrics:macro_f1_of", tag=True),
    MetricRow("test_ece", "ECE", ".3f", "test expected calibration error (lower is better)",
              "test", "petsml.evaluation.metrics:ece_of", higher_is_better=False, tag=True),
    MetricRow("train_seconds", "train s", ".1f", "training time, seconds", "summary",
              higher_is_better=False),
)  # fmt: skip


@cache
def rows() -> tuple[MetricRow, ...]:
    """Every metric: the built-in rows, then installed ones (keys must be unique)."""
    table = (*BUILT_IN, *installed(ENTRY_POINTS, MetricRow, lambda row: row.key))
    keys = [row.key for row in table]
    duplicates = sorted({key for key in keys if keys.count(key) > 1})
    if duplicates:
        raise ValueError(f"metrics registered twice: {', '.join(duplicates)}")
    return table


def keys() -> tuple[str, ...]:
    return tuple(row.key for row in rows())
