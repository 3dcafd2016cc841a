"""The frozen-feature strategies: a linear probe and an SVM on an earlier block.

Both train on the cached features in seconds (which feature, which head fitter: the strategy's
row in :mod:`petsml.training.strategies`); the fitted linear map is folded into a
:class:`Classifier` so every strategy ships the same kind of model (image in, logits out).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from petsml.config import Params
from petsml.data.feature_file import feature_path, read_features
from petsml.data.split import class_names as class_names_of
from petsml.data.split import load_fit_split
from petsml.models.backbones import create_backbone
from petsml.models.classifier import Classifier
from petsml.models.heads import pad_classes
from petsml.models.model_dir import ModelMeta, Summary, write_model_dir

if TYPE_CHECKING:
    from petsml.training.spec import Inputs, Strategy

log = logging.getLogger(__name__)


def _aligned(
    features_dir: Path, inputs: Inputs, split: str, task: str, feature: str, block: int
) -> tuple[np.ndarray, np.ndarray]:
    """The split's ``feature`` rows (``early``: block ``block``) and labels, matched by image id
    (never by row order), less the rows the data_issues stage excluded."""
    frame = load_fit_split(inputs.splits_dir, split, task, inputs.excluded_file)
    feats = read_features(features_dir, split)
    rows = feats.rows(frame["image_id"].tolist(), str(feature_path(features_dir, split)))
    x = feats.penultimate if feature == "penultimate" else feats.block(block)
    return x[rows], frame["label"].to_numpy()


def fit(strategy: Strategy, params: Params, out_dir: Path, inputs: Inputs) -> dict:
    """Fit ``strategy.head`` on its cached ``strategy.feature``; write the model folder."""
    feature = strategy.feature
    features_dir = Path(inputs.features_dir)
    task = params.data.task
    started = time.perf_counter()
    backbone = create_backbone(
        params.model.backbone,
        pretrained=params.model.pretrained,
        early_block=params.model.early_block,
        image_size=params.model.image_size,
    )
    block = backbone.early_index
    x_train, y_train = _aligned(features_dir, inputs, "train", task, feature, block)
    x_val, y_val = _aligned(features_dir, inputs, "val", task, feature, block)
    settings = strategy.settings(params)
    cs = list(getattr(settings, "C", ()))  # a head without a C grid gets an empty one
    head = strategy.head(x_train, y_train, x_val, y_val, cs)
    seconds = time.perf_counter() - started
    log.info(
        "%s: C=%s val accuracy %.4f (%.1fs)", strategy.name, head.C, head.val_accuracy, seconds
    )

    class_names = class_names_of(inputs.splits_dir, task)
    W, b = pad_classes(head.W, head.b, len(class_names))
    model = Classifier.from_linear(backbone, W, b, feature=feature)
    model.tta = params.train.tta  # the head was fitted without it; the shipped model applies it
    meta = ModelMeta(
        strategy=strategy.name,
        task=task,
        class_names=class_names,
        decode_size=params.decode.size,
        backbone=params.model.backbone,
        frozen_backbone=True,  # its trunk is the featurize stage's: evaluated from the cache
    )
    summary = Summary(
        strategy=strategy.name,
        task=task,
        backbone=params.model.backbone,
        val_accuracy=float(head.val_accuracy),
        train_seconds=float(seconds),
        best_epoch=None,
        epochs_run=0,
        device="cpu",
        params={
            "C": head.C,
            "C_grid": list(cs),
            "feature": feature,
            **({"block": block} if feature == "early" else {}),
        },
    )
    write_model_dir(out_dir, model, meta, summary=summary, search=head.search)
    return summary.as_dict()
