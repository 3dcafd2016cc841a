"""Strategy scoring: every strategy's saved model on the test images, as served.

Test metrics describe what ships. A frozen strategy's model is the featurize stage's backbone
plus its saved head, so its test logits are that head on the cached float32 test features (the
same fused network the served pyfunc runs: no second pass). A fine-tuned model runs once over
the test photos, and once over the photos of its similar-photo index (kept for the track
stage). ``val_accuracy`` stays what training selected on. The model folder is read through
:mod:`petsml.models.model_dir`.
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
from petsml.config import Params
from petsml.data.breeds import labels_for
from petsml.data.decode import DecodedImages
from petsml.data.feature_file import SplitFeatures
from petsml.data.split import load_split
from petsml.data.tensors import inference_batch_size, pick_device
from petsml.evaluation import metrics as M
from petsml.evaluation.inference import (
    EvaluationError,
    feature_logits,
    model_logits,
    model_pass,
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
    # "cached features" (the frozen backbone's float32 test pass, head applied) or "model"
    logits_from: str = "model"
    # fine-tuned models: (image ids, embeddings) of the similar-photo index's photos
    index: tuple[list[str], np.ndarray] | None = None

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
    frozen: bool  # the model file says its backbone is the featurize stage's, untouched
    backbone: str


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
            f"{paths.split_csv('test')} has label {labels.max()} but {model_path} knows "
            f"{n_classes} classes; re-run `dvc repro train@{strategy}`."
        )
    if spec.get("strategy", strategy) != strategy:
        log.warning("%s holds a %s model", model_path, spec.get("strategy"))
    summary, history = read_summary(model_dir, {}), read_history(model_dir, {})
    frozen = bool(spec.get("frozen_backbone")) and bool(spec.get("pretrained_init", True))
    return _Loaded(strategy, model.eval(), class_names, summary, history, frozen,
                   str(spec.get("backbone")))  # fmt: skip


def _from_cache(item: _Loaded, features: SplitFeatures | None) -> bool:
    """Whether the cached test features are this model's own float32 test pass."""
    return (
        features is not None
        and item.frozen
        and item.model.tta == "none"  # the cache holds the unaugmented photos only
        and features.precision == "fp32"
        and features.backbone == item.backbone
        and features.input_size == int(item.model.backbone.preprocessing.input_size)
    )


def _shared_logits(
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


def evaluate_strategies(
    strategies: list[str],
    params: Params,
    test: pd.DataFrame,
    *,
    root: str | Path = ".",
    decoded: DecodedImages | None = None,
    features: SplitFeatures | None = None,
    index_ids: list[str] | None = None,
    device: torch.device | None = None,
) -> list[StrategyEval]:
    """Load ``models/<strategy>`` for each strategy and compute its test logits as served.

    ``features``: the cached test features (a frozen strategy's logits come from them);
    ``index_ids``: the photos of the similar-photo index, embedded by each fine-tuned model in
    the same pass as its test photos (None: no index embeddings).
    """
    root = Path(root)
    loaded = [_load_model(s, params, test, root) for s in strategies]
    if decoded is None:
        decoded = DecodedImages.open(root / paths.DECODED)
    device = device or pick_device(params.train.device)
    image_ids = test["image_id"].tolist()
    batch = inference_batch_size(params.features.batch_size, device)
    source = str(paths.FEATURES / "test.npz")
    logits: dict[str, np.ndarray] = {}
    indexes: dict[str, tuple[list[str], np.ndarray]] = {}
    frozen_views = []
    for item in loaded:
        if _from_cache(item, features):
            logits[item.strategy] = feature_logits(item.model, features, image_ids, source)
        elif item.frozen:
            frozen_views.append(item)  # test-time views: one shared pass, see below
        else:
            logits[item.strategy], embedded = model_pass(
                item.model, decoded, image_ids, index_ids or [], batch, device, item.strategy
            )
            item.model.cpu()
            if index_ids is not None:
                indexes[item.strategy] = (list(index_ids), embedded)
    logits.update(_shared_logits(frozen_views, decoded, image_ids, batch, device))
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
            logits_from="cached features" if _from_cache(item, features) else "model",
            index=indexes.get(item.strategy),
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
    features: SplitFeatures | None = None,
    device: torch.device | None = None,
) -> StrategyEval:
    """:func:`evaluate_strategies` for one strategy."""
    (result,) = evaluate_strategies(
        [strategy], params, test, root=root, decoded=decoded, features=features, device=device
    )
    return result
