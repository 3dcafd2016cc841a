"""The strategy registry: one table stages/train.py dispatches through, and the model folder
contract every strategy writes (docs/ARCHITECTURE.md, "Adding a strategy")."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from petsml import config
from petsml.config import Params, parse_params
from petsml.data.breeds import CLASS_ID, labels_for
from petsml.data.feature_file import SplitFeatures, read_features, write_features
from petsml.data.split import load_split
from petsml.models.backbones import create_backbone
from petsml.models.base import pool
from petsml.models.classifier import Classifier
from petsml.models.model_dir import ModelDirError, read_model_dir, write_model_dir
from petsml.training import strategies
from petsml.training.spec import Inputs, Strategy
from stages import train as train_stage
from tests.project import apply_overrides

REPO = Path(__file__).resolve().parents[1]
BREEDS = sorted(CLASS_ID)[:3]


def _params() -> Params:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    settings = {
        "data.task": "breed",
        "model.backbone": "test_efficientnet",  # timm's tiny test network, random weights
        "model.pretrained": False,
        "model.image_size": 32,
        "model.early_block": -3,
        "feature_extractor.C": [0.1, 1.0],
    }
    return parse_params(apply_overrides(raw, settings))


@pytest.fixture(scope="module")
def feature_data(tmp_path_factory):
    """Split CSVs and cached features (clusters per breed) shaped like the featurize stage's."""
    root = tmp_path_factory.mktemp("features")
    params = _params()
    backbone = create_backbone(
        params.model.backbone, pretrained=False, early_block=params.model.early_block,
        image_size=params.model.image_size,
    )  # fmt: skip
    with torch.no_grad():
        outs, _ = backbone.eval().forward_blocks(torch.zeros(1, 3, 32, 32))
    dims = [pool(out).shape[1] for out in outs]  # every block; the last is the penultimate
    rng = np.random.default_rng(0)
    centres = [rng.normal(0, 3, (len(BREEDS), d)) for d in dims]
    splits, features = root / "splits", root / "features"
    splits.mkdir()
    features.mkdir()
    for split, per_breed in (("train", 6), ("val", 3)):
        rows = [
            {"image_id": f"{breed}_{split}{i}", "class_id": CLASS_ID[breed], "species_id": 0}
            for breed in BREEDS
            for i in range(per_breed)
        ]
        pd.DataFrame(rows).to_csv(splits / f"{split}.csv", index=False)
        index = np.repeat(np.arange(len(BREEDS)), per_breed)
        arrays = [
            (c[index] + rng.normal(0, 0.3, (len(index), c.shape[1]))).astype(np.float32)[::-1]
            for c in centres
        ]
        # Stored in reverse order: fits must match rows by image id, not by position.
        ids = np.array([r["image_id"] for r in rows])[::-1]
        write_features(features, split, SplitFeatures(ids, arrays[-1], arrays[:-1]))
    return splits, features


def test_registry_and_config_name_the_same_strategies():
    rows = strategies.REGISTRY.values()
    assert strategies.names() == config.STRATEGIES
    assert tuple(r.name for r in rows if r.consumes == "features") == config.FEATURE_STRATEGIES
    assert tuple(r.name for r in rows if r.consumes == "images") == config.TRAINED_STRATEGIES
    for row in rows:
        assert row.section in Params.model_fields, row
        assert (row.block_lrs is not None) == (row.consumes == "images"), row
        assert (row.head is not None) == (row.consumes == "features"), row


def test_an_unknown_strategy_gets_a_clear_error_naming_the_known_ones(tmp_path):
    with pytest.raises(strategies.TrainingError, match="unknown strategy 'bogus'.*scratch"):
        train_stage.train("bogus", _params(), tmp_path / "bogus")


def _nearest_class_mean(strategy: Strategy, params: Params, out_dir: Path, inputs: Inputs) -> dict:
    """A toy strategy: each class's mean feature; the nearest mean wins (a linear map)."""
    task = params.data.task
    class_names = list(labels_for(task))

    backbone = create_backbone(
        params.model.backbone, pretrained=params.model.pretrained,
        early_block=params.model.early_block, image_size=params.model.image_size,
    )  # fmt: skip

    def rows(split: str) -> tuple[np.ndarray, np.ndarray]:
        frame = load_split(Path(inputs.splits_dir) / f"{split}.csv", task)
        feats = read_features(inputs.features_dir, split)
        order = feats.rows(frame["image_id"].tolist(), split)
        x = feats.penultimate if strategy.feature == "penultimate" else feats.block(
            backbone.early_index)  # fmt: skip
        return x[order], frame["label"].to_numpy()

    (x, y), (x_val, y_val) = rows("train"), rows("val")
    means = np.zeros((len(class_names), x.shape[1]))
    for label in np.unique(y):
        means[label] = x[y == label].mean(axis=0)
    W = 2 * means  # argmin |x - m|^2 == argmax 2 m.x - |m|^2
    b = np.where(np.isin(np.arange(len(class_names)), y), -(means**2).sum(axis=1), -1e9)
    accuracy = float(((x_val @ W.T + b).argmax(axis=1) == y_val).mean())
    model = Classifier.from_linear(backbone, W, b, feature=strategy.feature)
    meta = {
        "strategy": strategy.name, "task": task, "class_names": class_names,
        "decode_size": params.decode.size, "backbone": params.model.backbone,
    }  # fmt: skip
    summary = {
        "strategy": strategy.name, "task": task, "backbone": params.model.backbone,
        "val_accuracy": accuracy, "train_seconds": 0.0, "best_epoch": None, "epochs_run": 0,
        "device": "cpu", "params": {"feature": strategy.feature},
    }  # fmt: skip
    write_model_dir(out_dir, model, meta, summary=summary)
    return summary


def test_a_strategy_added_through_the_registry_alone_trains_via_the_stage(feature_data, tmp_path):
    """The "Adding a strategy" guide: one registry row, nothing else edited."""
    splits, features = feature_data
    toy = Strategy("nearest_mean", "features", None, _nearest_class_mean, feature="early")
    strategies.register(toy)
    try:
        with pytest.raises(strategies.TrainingError, match="already registered"):
            strategies.register(replace(toy))
        out = tmp_path / "models" / "nearest_mean"
        summary = train_stage.train(
            "nearest_mean", _params(), out, features_dir=features, splits_dir=splits,
            checkpoints=tmp_path / "checkpoints",
        )  # fmt: skip
    finally:
        strategies.unregister("nearest_mean")
    assert "nearest_mean" not in strategies.names()

    folder = read_model_dir(out)
    assert folder.summary == summary and summary["val_accuracy"] == 1.0
    assert folder.history == {"epochs": [], "search": []}
    assert folder.spec["strategy"] == "nearest_mean" and folder.spec["feature"] == "early"
    val = read_features(features, "val")
    labels = load_split(splits / "val.csv", "breed")["label"].to_numpy()
    with torch.no_grad():
        early = val.block(folder.model.backbone.early_index)
        logits = folder.model.head(torch.from_numpy(np.ascontiguousarray(early)))
    assert (logits.argmax(1).numpy() == labels[::-1]).all()  # the npz rows are reversed


def test_a_feature_strategy_dispatched_by_the_stage_writes_the_model_folder(feature_data, tmp_path):
    splits, features = feature_data
    out = tmp_path / "models" / "feature_extractor"
    (out / "stale.txt").parent.mkdir(parents=True)
    (out / "stale.txt").write_text("from an earlier run")
    summary = train_stage.train(
        "feature_extractor", _params(), out, features_dir=features, splits_dir=splits
    )
    assert sorted(p.name for p in out.iterdir()) == ["history.json", "model.pt", "summary.json"]
    folder = read_model_dir(out)
    assert folder.summary == summary and summary["params"]["C_grid"] == [0.1, 1.0]
    assert folder.history["epochs"] == [] and len(folder.history["search"]) == 2
    assert folder.spec["strategy"] == "feature_extractor"


def test_reading_a_model_folder_names_the_missing_file(feature_data, tmp_path):
    splits, features = feature_data
    out = tmp_path / "m"
    train_stage.train("svm_early", _params(), out, features_dir=features, splits_dir=splits)
    assert read_model_dir(out, load_model=False).model is None
    (out / "summary.json").unlink()
    with pytest.raises(ModelDirError, match=r"summary\.json: missing"):
        read_model_dir(out)
    (out / "model.pt").unlink()
    with pytest.raises(ModelDirError, match=r"model\.pt: missing"):
        read_model_dir(out)
