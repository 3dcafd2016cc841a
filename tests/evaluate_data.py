"""The evaluate tests' tiny project (test_evaluate.py, test_evaluate_dvc.py): the offline Lite0
at 32 px, fake pets, 40 px images, models saved by hand; a pytest plugin, so each module builds
its own copy from the same code."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from sklearn.linear_model import LogisticRegression

from petsml import paths
from petsml.config import parse_params
from petsml.data.breeds import labels_for
from petsml.data.decode import DecodedImages, decode_images
from petsml.data.feature_file import read_features
from petsml.data.split import load_split
from petsml.evaluation import evaluate
from petsml.models.backbones import create_backbone
from petsml.models.classifier import Classifier
from petsml.models.model_dir import ModelMeta, Summary, write_model_dir
from petsml.testing.fakedata import make_dataset, split_rows
from petsml.testing.project import apply_overrides
from petsml.training.features import featurize_splits

REPO = Path(__file__).resolve().parents[1]
BACKBONE = "efficientnet_lite0"  # pretrained offline weights: featurize's exact backbone
STRATEGIES = ["feature_extractor", "svm_early", "finetune_top"]
FROZEN = ("feature_extractor", "svm_early")
CPU = torch.device("cpu")


def eval_params(**overrides) -> dict:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    settings = {
        "model.backbone": BACKBONE,
        "model.image_size": 32,
        "model.early_block": -3,
        "decode.size": 40,
        "train.device": "cpu",
        "train.strategies": STRATEGIES,
        "features.batch_size": 5,  # several batches over 12 test images
        "evaluate.calibration_bins": 10,
    } | overrides
    return apply_overrides(raw, settings)


def eval_backbone(pretrained: bool = True):
    return create_backbone(BACKBONE, pretrained=pretrained, early_block=-3, image_size=32)


def save_model(root: Path, strategy: str, model: Classifier, task: str, epochs=(), search=()):
    meta = ModelMeta(
        strategy=strategy,
        task=task,
        class_names=list(labels_for(task)),
        decode_size=40,
        backbone=BACKBONE,
        frozen_backbone=strategy in FROZEN,
    )
    summary = Summary(
        strategy=strategy, task=task, backbone=BACKBONE, val_accuracy=0.625, train_seconds=1.5,
        best_epoch=None, epochs_run=len(epochs), device="cpu", params={},
    )  # fmt: skip
    write_model_dir(root / paths.model_dir(strategy), model, meta, summary=summary,
                    epochs=list(epochs), search=list(search))  # fmt: skip


def fit_head(backbone, features, labels, n_classes, feature):
    """A linear head fitted on the (random-init) features: better than chance, not perfect."""
    fit = LogisticRegression(C=0.05, max_iter=500).fit(features, labels)
    weight = np.zeros((n_classes, features.shape[1]))
    bias = np.full(n_classes, -20.0)  # classes absent from the fake data are never predicted
    if len(fit.classes_) == 2:  # sklearn's binary case has one row for the positive class
        weight[fit.classes_[1]], bias[fit.classes_[1]] = fit.coef_[0], fit.intercept_[0]
        bias[fit.classes_[0]] = 0.0
    else:
        weight[fit.classes_], bias[fit.classes_] = fit.coef_, fit.intercept_
    return Classifier.from_linear(backbone, weight, bias, feature=feature)


def make_data(root: Path) -> None:
    """Split CSVs (4 breeds, 20 train+val, 12 test images), decoded cache, cached features."""
    ds = make_dataset(root / "src", per_breed=8, test_per_breed=3, size=(48, 44), quirks=False)
    frame = pd.DataFrame(split_rows(ds))
    test_ids = set(ds.test)
    splits = {
        "train": frame[~frame.image_id.isin(test_ids)],
        "val": frame[~frame.image_id.isin(test_ids)].iloc[::4],
        "test": frame[frame.image_id.isin(test_ids)],
    }
    (root / paths.SPLITS).mkdir(parents=True)
    for name, split in splits.items():
        split.to_csv(root / paths.split_csv(name), index=False)
    decode_images(frame, root / "src", root / paths.DECODED, size=40, workers=1)
    decoded = DecodedImages.open(root / paths.DECODED)
    split_ids = {name: split["image_id"].tolist() for name, split in splits.items()}
    featurize_splits(eval_backbone(), decoded, split_ids, root / paths.FEATURES, 8, CPU, "fp32")


def make_models(root: Path, task: str, strategies: list[str]) -> None:
    """models/<strategy>/ by hand; params.yaml naming the task and strategies."""
    backbone = eval_backbone()  # the same weights the features came from
    feats = read_features(root / paths.FEATURES, "train")
    train = load_split(root / paths.split_csv("train"), task)
    assert feats.image_id.tolist() == train["image_id"].tolist()
    n_classes = len(labels_for(task))
    for strategy in strategies:
        if strategy in FROZEN:
            kind = "penultimate" if strategy == "feature_extractor" else "early"
            x = feats.penultimate if kind == "penultimate" else feats.block(backbone.early_index)
            model = fit_head(backbone, x, train["label"], n_classes, kind)
            search = [{"C": 1.0, "val_accuracy": 0.625}, {"C": 0.01, "val_accuracy": 0.5}]
            save_model(root, strategy, model, task, search=search)
        else:
            torch.manual_seed(1)
            model = Classifier(eval_backbone(pretrained=False), n_classes)  # random: mostly wrong
            epochs = [
                {"epoch": e, "train_loss": 3.0 / e, "train_accuracy": 0.2 * e,
                 "val_loss": 3.2 / e, "val_accuracy": 0.15 * e, "lr": 1e-3, "seconds": 0.1}
                for e in (1, 2, 3)
            ]  # fmt: skip
            save_model(root, strategy, model, task, epochs=epochs)
    (root / "params.yaml").write_text(
        yaml.safe_dump(eval_params(**{"data.task": task, "train.strategies": strategies}))
    )


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("evalproj")
    make_data(root)
    make_models(root, "breed", STRATEGIES)
    params = parse_params(eval_params())
    scores = evaluate.evaluate_all(params, root=root, device=CPU)
    return root, params, scores


def predictions(root: Path, strategy: str) -> pd.DataFrame:
    return pd.read_csv(root / evaluate.EVAL_DIR / strategy / "predictions.csv")


def copy_data(root: Path, dest: Path) -> Path:
    shutil.copytree(root / paths.DATA, dest / paths.DATA)
    return dest
