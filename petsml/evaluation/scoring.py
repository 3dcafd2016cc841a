"""Strategy scoring: every strategy's saved model run on the test images, as served.

Test metrics describe what ships: every strategy's saved ``model.pt`` runs in float32 on the
decoded test images, the path the served model takes (:mod:`petsml.evaluation.inference`), so
the frozen-feature strategies too are scored by their model, not by the cached (possibly bf16)
features their heads were fitted on. ``val_accuracy`` stays what training selected on. The
model folder is read through :mod:`petsml.models.model_dir`.
"""

from __future__ import annotations

import logging
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
from petsml.evaluation.inference import (
    EvaluationError,
    feature_logits,
    model_logits,
    shared_trunk_logits,
    trunk_fingerprint,
)
from petsml.models.classifier import Classifier, load_classifier
from petsml.models.model_dir import model_file, read_history, read_summary

log = logging.getLogger(__name__)


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
    summary: dict[str, Any]
    history: dict[str, Any]


def _load_model(strategy: str, params: Params, test: pd.DataFrame, root: Path) -> _Loaded:
    """``models/<strategy>/model.pt``, checked against the task and the test labels."""
    model_dir = root / paths.model_dir(strategy)
    model_path = model_file(model_dir)
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
    summary, history = read_summary(model_dir, {}), read_history(model_dir, {})
    return _Loaded(strategy, model.eval(), class_names, summary, history)


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
    if item.model.tta != "none":  # the cached features are of the unaugmented images only
        log.info("%s: tta %s, cached features not compared with the model", item.strategy,
                 item.model.tta)  # fmt: skip
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
            summary=item.summary,
            history=item.history,
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
