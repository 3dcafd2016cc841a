"""The evaluate stage's work: test logits of every strategy -> reports, figures, plot data.

Test metrics describe what ships: every strategy's saved ``model.pt`` runs in float32 on the
decoded test images, the path the served model takes (:mod:`petsml.evaluation.inference`), so
the frozen-feature strategies too are scored by their model, not by the cached (possibly bf16)
features their heads were fitted on. ``val_accuracy`` stays what training selected on.

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

``reports/eval``, ``reports/metrics`` and ``reports/plots`` are each replaced as a whole,
atomically, so a strategy dropped from ``train.strategies`` leaves no stale report behind.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from petsml import paths
from petsml.config import FEATURE_STRATEGIES, Params
from petsml.data.breeds import labels_for
from petsml.data.decode import DecodedImages
from petsml.data.split import load_split
from petsml.data.tensors import pick_device
from petsml.evaluation import metrics as M
from petsml.evaluation import plots
from petsml.evaluation.inference import (
    EvaluationError,
    feature_logits,
    load_feature_split,
    model_logits,
    shared_trunk_logits,
    trunk_fingerprint,
)
from petsml.io import atomic_dir, read_json, write_json
from petsml.models.classifier import Classifier, load_classifier

log = logging.getLogger(__name__)

EVAL_DIR = paths.REPORTS / "eval"
PLOTS_DIR = paths.REPORTS / "plots"
STRATEGY_METRICS_DIR = paths.REPORTS / "metrics"  # <strategy>.json: the DVC metrics files
COMPARISON_PNG = "strategies.png"  # in EVAL_DIR: val and test accuracy of every strategy
TOP_K = 5
TOP_CONFUSED = 10
MAX_MISCLASSIFIED = 24
METRIC_KEYS = (
    "val_accuracy",
    "test_accuracy",
    "test_top5",
    "test_macro_f1",
    "test_ece",
    "train_seconds",
)


@dataclass
class StrategyEval:
    """Test-set outputs of one strategy's model, plus what its training run recorded."""

    strategy: str
    image_ids: list[str]
    labels: np.ndarray  # (N,) int
    logits: np.ndarray  # (N, C) float32
    class_names: list[str]
    summary: dict[str, Any] = field(default_factory=dict)
    history: dict[str, Any] = field(default_factory=dict)
    logits_from: str = "model"  # the saved model.pt on the decoded images, as served
    # frozen-feature strategies: how the cached features through the head compare (diagnostic)
    features_check: dict[str, Any] = field(default_factory=dict)

    @property
    def probs(self) -> np.ndarray:
        return M.softmax(self.logits)


def _read_json(path: Path, default: Any) -> Any:
    return read_json(path) if path.exists() else default


def load_test_split(root: Path, task: str) -> pd.DataFrame:
    path = root / paths.split_csv("test")
    if not path.exists():
        raise EvaluationError(f"{path}: test split missing. Run `dvc repro split` first.")
    return load_split(path, task)


@dataclass
class _Loaded:
    strategy: str
    model: Classifier
    class_names: list[str]
    model_dir: Path


def _load_model(strategy: str, params: Params, test: pd.DataFrame, root: Path) -> _Loaded:
    """``models/<strategy>/model.pt``, checked against the task and the test labels."""
    model_dir = root / paths.model_dir(strategy)
    model_path = model_dir / "model.pt"
    if not model_path.exists():
        raise EvaluationError(
            f"{model_path}: model missing. Run `dvc repro train@{strategy}` (or remove "
            f"{strategy} from train.strategies in params.yaml)."
        )
    model, spec = load_classifier(model_path, map_location="cpu")
    task = params.data.task
    if spec.get("task", task) != task:
        raise EvaluationError(
            f"{model_path} was trained for task {spec.get('task')!r} but params.yaml data.task is "
            f"{task!r}; re-run `dvc repro train@{strategy}`."
        )
    class_names = [str(name) for name in spec.get("class_names") or labels_for(task)]
    n_classes = int(model.head.out_features)
    if len(class_names) != n_classes:
        raise EvaluationError(
            f"{model_path}: {len(class_names)} class names but the head has {n_classes} outputs; "
            f"the file is damaged. Re-run `dvc repro train@{strategy}`."
        )
    labels = test["label"].to_numpy(dtype=np.int64)
    if len(labels) and labels.max() >= n_classes:
        raise EvaluationError(
            f"data/splits/test.csv has label {labels.max()} but {model_path} knows {n_classes} "
            f"classes; re-run `dvc repro train@{strategy}`."
        )
    if spec.get("strategy", strategy) != strategy:
        log.warning("%s holds a %s model", model_path, spec.get("strategy"))
    return _Loaded(strategy, model.eval(), class_names, model_dir)


def _shipped_logits(
    loaded: list[_Loaded],
    decoded: DecodedImages,
    image_ids: list[str],
    batch_size: int,
    device: torch.device,
) -> dict[str, np.ndarray]:
    """Every model's float32 test logits; models sharing a backbone share its pass."""
    groups: dict[str, list[_Loaded]] = {}
    for item in loaded:
        groups.setdefault(trunk_fingerprint(item.model), []).append(item)
    logits: dict[str, np.ndarray] = {}
    for group in groups.values():
        names = [item.strategy for item in group]
        if len(group) == 1:
            outs = [model_logits(group[0].model, decoded, image_ids, batch_size, device, names[0])]
        else:
            log.info("%s share one backbone: one forward pass for all of them", ", ".join(names))
            models = [item.model for item in group]
            outs = shared_trunk_logits(
                models, decoded, image_ids, batch_size, device, "+".join(names)
            )
        logits.update(zip(names, outs, strict=True))
        for item in group:
            item.model.cpu()
    return logits


def _features_check(
    item: _Loaded, shipped: np.ndarray, features: dict[str, np.ndarray] | None, ids: list[str]
) -> dict[str, Any]:
    """How the cached features through the head compare with the shipped model's logits."""
    if features is None:
        return {}
    try:
        cached = feature_logits(item.model, features, ids, source=str(paths.FEATURES / "test.npz"))
    except EvaluationError as error:
        log.warning("%s: cached features not compared with the model (%s)", item.strategy, error)
        return {}
    agree = float((cached.argmax(axis=1) == shipped.argmax(axis=1)).mean()) if len(ids) else 1.0
    check = {
        "prediction_agreement": agree,
        "max_abs_logit_difference": float(np.abs(cached - shipped).max()) if len(ids) else 0.0,
    }
    if agree < 1.0:
        log.warning(
            "%s: the cached features (data/features, model.precision) through the head predict "
            "%d of %d test images differently from the shipped model; the metrics are the "
            "shipped model's",
            item.strategy,
            round((1 - agree) * len(ids)),
            len(ids),
        )
    return check


def evaluate_strategies(
    strategies: list[str],
    params: Params,
    test: pd.DataFrame,
    *,
    root: str | Path = ".",
    decoded: DecodedImages | None = None,
    features: dict[str, np.ndarray] | None = None,
    device: torch.device | None = None,
) -> list[StrategyEval]:
    """Load ``models/<strategy>`` for each strategy and compute its test logits as served.

    Every model runs in float32 on the decoded test images; frozen-feature strategies whose
    backbones are identical share one pass. ``features`` (the cached test features) are only
    compared with the result, for frozen-feature strategies.
    """
    root = Path(root)
    loaded = [_load_model(s, params, test, root) for s in strategies]
    if decoded is None:
        decoded = DecodedImages.open(root / paths.DECODED)
    device = device or pick_device(params.train.device)
    image_ids = test["image_id"].tolist()
    logits = _shipped_logits(loaded, decoded, image_ids, params.evaluate.batch_size, device)
    labels = test["label"].to_numpy(dtype=np.int64)
    return [
        StrategyEval(
            strategy=item.strategy,
            image_ids=image_ids,
            labels=labels,
            logits=logits[item.strategy],
            class_names=item.class_names,
            summary=_read_json(item.model_dir / "summary.json", {}),
            history=_read_json(item.model_dir / "history.json", {}),
            features_check=(
                _features_check(item, logits[item.strategy], features, image_ids)
                if item.strategy in FEATURE_STRATEGIES
                else {}
            ),
        )
        for item in loaded
    ]


def evaluate_strategy(
    strategy: str,
    params: Params,
    test: pd.DataFrame,
    *,
    root: str | Path = ".",
    decoded: DecodedImages | None = None,
    features: dict[str, np.ndarray] | None = None,
    device: torch.device | None = None,
) -> StrategyEval:
    """:func:`evaluate_strategies` for one strategy."""
    (result,) = evaluate_strategies(
        [strategy], params, test, root=root, decoded=decoded, features=features, device=device
    )
    return result


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
    """The ``reports/metrics.json`` entry of one strategy."""
    scores = M.summarize(result.labels, result.logits, n_bins=n_bins, k=TOP_K)
    return {
        "val_accuracy": _clean(result.summary.get("val_accuracy")),
        "test_accuracy": _clean(scores["accuracy"]),
        "test_top5": _clean(scores["top5"]),
        "test_macro_f1": _clean(scores["macro_f1"]),
        "test_ece": _clean(scores["ece"]),
        "train_seconds": _clean(result.summary.get("train_seconds")),
    }


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
    if result.features_check:
        details["features_check"] = result.features_check
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


def evaluate_all(
    params: Params, root: str | Path = ".", device: torch.device | None = None
) -> dict[str, dict[str, Any]]:
    """The whole evaluate stage: every strategy in ``train.strategies``; returns metrics.json."""
    root = Path(root)
    task = params.data.task
    n_bins = params.evaluate.calibration_bins
    test = load_test_split(root, task)
    decoded = DecodedImages.open(root / paths.DECODED)
    features = None
    features_file = root / paths.FEATURES / "test.npz"
    if any(s in FEATURE_STRATEGIES for s in params.train.strategies) and features_file.exists():
        features = load_feature_split(root / paths.FEATURES, "test")  # for the check only
    results = evaluate_strategies(
        list(params.train.strategies),
        params,
        test,
        root=root,
        decoded=decoded,
        features=features,
        device=device,
    )
    scores: dict[str, dict[str, Any]] = {}
    with atomic_dir(root / EVAL_DIR) as tmp:
        for result in results:
            scores[result.strategy] = write_strategy_report(
                result, tmp / result.strategy, decoded, n_bins
            )
            log.info(
                "%s: test accuracy %.4f, top-5 %.4f, macro F1 %.4f, ECE %.4f (logits from %s)",
                result.strategy,
                *(scores[result.strategy][k] or float("nan") for k in METRIC_KEYS[1:5]),
                result.logits_from,
            )
        plots.strategies_png(scores, tmp / COMPARISON_PNG)
    with atomic_dir(root / PLOTS_DIR) as tmp:
        write_plot_data(results, scores, tmp, n_bins)
    write_strategy_metrics(scores, root / STRATEGY_METRICS_DIR)
    write_json(root / paths.METRICS, scores)
    return scores


def write_strategy_metrics(scores: dict[str, dict[str, Any]], out_dir: str | Path) -> None:
    """``<out_dir>/<strategy>.json`` per strategy, the folder replaced as a whole.

    DVC prints one row per metrics file: a file per strategy makes ``dvc metrics show`` a table
    of strategies with a handful of columns rather than a single row of every pair.
    """
    with atomic_dir(Path(out_dir)) as tmp:
        for strategy, values in scores.items():
            write_json(tmp / f"{strategy}.json", values)
