"""The evaluate stage's files: per-strategy reports, plot data and the DVC metrics files.

Layout written (paths relative to the project root):

* ``reports/eval/<strategy>/``: ``predictions.csv`` (one row per test image), ``per_class.csv``,
  ``confused_pairs.csv``, ``metrics.json``, ``confusion.png``, ``misclassified.png``,
  ``reliability.png``;
* ``reports/eval/strategies.png``: every strategy's validation and test accuracy side by side;
* ``reports/metrics.json``: ``{strategy: {val_accuracy, test_accuracy, test_top5,
  test_macro_f1, test_ece, train_seconds}}``, the combined file the track stage and the flows read;
* ``reports/metrics/<strategy>.json``: the same entry, one file per strategy: these are the DVC
  metrics files, so ``dvc metrics show`` / ``dvc metrics diff`` print one row per strategy
  instead of one row of strategies x metrics columns;
* ``reports/plots/``: CSV data for ``dvc plots`` (see the ``plots:`` section of dvc.yaml).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from petsml import paths
from petsml.catalog import metrics as metrics_catalog
from petsml.catalog.refs import resolve
from petsml.data.decode import DecodedImages
from petsml.evaluation import metrics as M
from petsml.evaluation import plots
from petsml.evaluation.results import METRIC_KEYS
from petsml.evaluation.scoring import StrategyEval
from petsml.io import atomic_dir, write_json

EVAL_DIR = paths.EVAL
PLOTS_DIR = paths.PLOTS
STRATEGY_METRICS_DIR = paths.STRATEGY_METRICS  # <strategy>.json: the DVC metrics files
COMPARISON_PNG = "strategies.png"  # in EVAL_DIR: val and test accuracy of every strategy
TOP_K = 5
TOP_CONFUSED = 10
MAX_MISCLASSIFIED = 24


def predictions_frame(result: StrategyEval) -> pd.DataFrame:
    """One row per test image: label, prediction, its probability, top-5 ids, correctness."""
    probs = result.probs
    preds = probs.argmax(axis=1)
    top = M.top_k(probs, TOP_K)
    names = np.asarray(result.class_names, dtype=object)
    return pd.DataFrame(
        {
            "image_id": result.image_ids,
            "label": result.labels,
            "label_name": names[result.labels],
            "pred": preds,
            "pred_name": names[preds],
            "prob": np.round(probs.max(axis=1), 6),
            "label_prob": np.round(probs[np.arange(len(preds)), result.labels], 6),
            "top5": [" ".join(map(str, row)) for row in top],
            "correct": preds == result.labels,
        }
    )


def per_class_frame(cm: np.ndarray, class_names: list[str]) -> pd.DataFrame:
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    tp = np.diag(cm)
    precision = np.divide(tp, predicted, out=np.full(len(tp), np.nan), where=predicted > 0)
    return pd.DataFrame(
        {
            "class_id": np.arange(len(class_names)),
            "class_name": class_names,
            "support": support,
            "correct": tp,
            "accuracy": np.round(M.per_class_accuracy(cm), 6),
            "precision": np.round(precision, 6),
            "f1": np.round(M.per_class_f1(cm), 6),
        }
    )


def _clean(value: Any) -> Any:
    """JSON-safe float: NaN/inf become None (DVC and MLflow reject NaN)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def headline(result: StrategyEval, n_bins: int) -> dict[str, Any]:
    """The ``reports/metrics.json`` entry of one strategy: a value per row of the metrics
    registry (:mod:`petsml.catalog.metrics`), computed on the test logits or read from the
    strategy's summary."""
    out = {}
    for row in metrics_catalog.rows():
        if row.source == "summary":
            out[row.key] = _clean(result.summary.get(row.key))
        else:
            out[row.key] = _clean(resolve(row.compute)(result.labels, result.logits, n_bins))
    return out


def write_strategy_report(
    result: StrategyEval, out_dir: str | Path, decoded: DecodedImages | None, n_bins: int
) -> dict[str, Any]:
    """Write ``reports/eval/<strategy>/`` for one strategy; returns its headline metrics."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = result.class_names
    n_classes = len(names)
    preds_frame = predictions_frame(result)
    preds_frame.to_csv(out_dir / "predictions.csv", index=False)
    preds = preds_frame["pred"].to_numpy()
    cm = M.confusion_matrix(result.labels, preds, n_classes)
    per_class_frame(cm, names).to_csv(out_dir / "per_class.csv", index=False)
    pairs = M.confused_pairs(cm, names, top=TOP_CONFUSED)
    columns = ["actual", "actual_name", "predicted", "predicted_name", "count"]
    pd.DataFrame(pairs, columns=columns).to_csv(out_dir / "confused_pairs.csv", index=False)

    head = headline(result, n_bins)
    details = {
        **head,
        "strategy": result.strategy,
        "n_test": len(result.labels),
        "n_classes": n_classes,
        "calibration_bins": n_bins,
        "logits_from": result.logits_from,
    }
    write_json(out_dir / "metrics.json", details)

    label = result.strategy.replace("_", " ")
    plots.confusion_png(
        cm, names, out_dir / "confusion.png",
        title=f"{label}: test confusion (accuracy {head['test_accuracy'] or 0:.3f})",
    )  # fmt: skip
    bins = M.reliability_bins(result.probs, result.labels, n_bins)
    plots.reliability_png(
        bins, out_dir / "reliability.png", title=f"{label}: reliability (ECE {bins.ece:.3f})"
    )
    wrong = preds_frame[~preds_frame["correct"]].sort_values(
        ["prob", "image_id"], ascending=[False, True]
    )[:MAX_MISCLASSIFIED]
    images = (
        decoded.take(wrong["image_id"].tolist())
        if decoded is not None and len(wrong)
        else np.empty((0, 1, 1, 3), dtype=np.uint8)
    )
    plots.misclassified_png(
        images,
        wrong["label_name"].tolist(),
        wrong["pred_name"].tolist(),
        wrong["prob"].tolist(),
        out_dir / "misclassified.png",
        title=f"{label}: most confident mistakes ({int((~preds_frame['correct']).sum())} "
        f"of {len(preds_frame)} test images wrong)",
    )
    return head


def _csv(frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)


def write_plot_data(
    results: list[StrategyEval], scores: dict[str, dict[str, Any]], out_dir: str | Path, n_bins: int
) -> None:
    """CSV files under ``reports/plots/`` that the ``plots:`` section of dvc.yaml renders."""
    out_dir = Path(out_dir)
    rows = []
    for result in results:
        s = result.strategy
        names = np.asarray(result.class_names, dtype=object)
        preds = result.logits.argmax(axis=1)
        _csv(
            pd.DataFrame({"actual": names[result.labels], "predicted": names[preds]}),
            out_dir / "confusion" / f"{s}.csv",
        )
        bins = M.reliability_bins(result.probs, result.labels, n_bins)
        used = bins.count > 0
        reliability = {
            "confidence": np.round(bins.confidence[used], 6),
            "accuracy": np.round(bins.accuracy[used], 6),
            "count": bins.count[used],
        }
        _csv(pd.DataFrame(reliability), out_dir / "reliability" / f"{s}.csv")
        epochs = pd.DataFrame(result.history.get("epochs") or [])
        if len(epochs) and "epoch" in epochs:
            for name, cols in (
                ("accuracy", ["train_accuracy", "val_accuracy"]),
                ("loss", ["train_loss", "val_loss"]),
            ):
                present = [c for c in cols if c in epochs]
                if present:
                    _csv(epochs[["epoch", *present]], out_dir / "history" / name / f"{s}.csv")
        search = pd.DataFrame(result.history.get("search") or [])
        if len(search) and {"C", "val_accuracy"} <= set(search.columns):
            search = search.sort_values("C")
            search.insert(0, "log10_C", np.round(np.log10(search["C"].astype(float)), 6))
            _csv(search[["log10_C", "C", "val_accuracy"]], out_dir / "search" / f"{s}.csv")
        rows.append({"strategy": s, **scores[s]})
    columns = ["strategy", *METRIC_KEYS]
    _csv(pd.DataFrame(rows, columns=columns), out_dir / "strategies.csv")


def write_strategy_metrics(scores: dict[str, dict[str, Any]], out_dir: str | Path) -> None:
    """``<out_dir>/<strategy>.json`` per strategy, the folder replaced as a whole.

    DVC prints one row per metrics file: a file per strategy makes ``dvc metrics show`` a table
    of strategies with a handful of columns rather than a single row of every pair.
    """
    with atomic_dir(Path(out_dir)) as tmp:
        for strategy, values in scores.items():
            write_json(tmp / f"{strategy}.json", values)
