"""The evaluate stage's work: test logits of every strategy -> reports, figures, plot data.

Scoring (:mod:`petsml.evaluation.scoring`) runs every strategy's saved model on the test
images; :mod:`petsml.evaluation.report_files` writes what comes out (its docstring lists the
layout). ``reports/eval``, ``reports/metrics`` and ``reports/plots`` are each replaced as a
whole, atomically, so a strategy dropped from ``train.strategies`` leaves no stale report behind.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from petsml import paths
from petsml.config import Params
from petsml.data.decode import DecodedImages
from petsml.data.feature_file import read_features
from petsml.data.split import load_split
from petsml.evaluation import plots
from petsml.evaluation.embeddings import write_embeddings
from petsml.evaluation.report_files import (
    COMPARISON_PNG,
    EVAL_DIR,
    MAX_MISCLASSIFIED,
    METRIC_KEYS,
    PLOTS_DIR,
    STRATEGY_METRICS_DIR,
    TOP_CONFUSED,
    TOP_K,
    headline,
    per_class_frame,
    predictions_frame,
    write_plot_data,
    write_strategy_metrics,
    write_strategy_report,
)
from petsml.evaluation.scoring import (
    StrategyEval,
    evaluate_strategies,
    evaluate_strategy,
    load_test_split,
)
from petsml.io import atomic_dir, write_json

__all__ = [
    "COMPARISON_PNG",
    "EVAL_DIR",
    "MAX_MISCLASSIFIED",
    "METRIC_KEYS",
    "PLOTS_DIR",
    "STRATEGY_METRICS_DIR",
    "TOP_CONFUSED",
    "TOP_K",
    "StrategyEval",
    "evaluate_all",
    "evaluate_strategies",
    "evaluate_strategy",
    "headline",
    "load_test_split",
    "per_class_frame",
    "predictions_frame",
    "write_plot_data",
    "write_strategy_metrics",
    "write_strategy_report",
]

log = logging.getLogger(__name__)


def evaluate_all(
    params: Params, root: str | Path = ".", device: torch.device | None = None
) -> dict[str, dict[str, Any]]:
    """The whole evaluate stage: every strategy in ``train.strategies``; returns metrics.json.

    Also writes ``data/embeddings/``: the similar-photo index rows of each fine-tuned model,
    from the same pass as its test photos (a frozen model's are the cached features)."""
    root = Path(root)
    task = params.data.task
    n_bins = params.evaluate.calibration_bins
    test = load_test_split(root, task)
    decoded = DecodedImages.open(root / paths.DECODED)
    index_ids = [
        image_id
        for name in paths.INDEX_SPLITS
        for image_id in load_split(root / paths.split_csv(name), task)["image_id"]
    ]
    results = evaluate_strategies(
        list(params.train.strategies),
        params,
        test,
        root=root,
        decoded=decoded,
        features=read_features(root / paths.FEATURES, "test"),
        index_ids=index_ids,
        device=device,
    )
    write_embeddings(root / paths.EMBEDDINGS, {r.strategy: r.index for r in results if r.index})
    scores: dict[str, dict[str, Any]] = {}
    with atomic_dir(root / EVAL_DIR) as tmp:
        for result in results:
            scores[result.strategy] = write_strategy_report(
                result, tmp / result.strategy, decoded, n_bins
            )
            shown = ", ".join(f"{k} {v:.4f}" for k, v in scores[result.strategy].items()
                              if isinstance(v, float))  # fmt: skip
            log.info("%s: %s (logits from %s)", result.strategy, shown, result.logits_from)
        plots.strategies_png(scores, tmp / COMPARISON_PNG)
    with atomic_dir(root / PLOTS_DIR) as tmp:
        write_plot_data(results, scores, tmp, n_bins)
    write_strategy_metrics(scores, root / STRATEGY_METRICS_DIR)
    write_json(root / paths.METRICS, scores)
    return scores
