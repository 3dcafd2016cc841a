"""The strategy registry: one table stages/train.py dispatches through, and the model folder
contract every strategy writes (docs/ARCHITECTURE.md, "Adding a strategy")."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from petsml.catalog import strategies as catalog
from petsml.catalog.plugins import PluginError
from petsml.config import ConfigError, Params, parse_params
from petsml.data.breeds import CLASS_ID
from petsml.data.feature_file import SplitFeatures, read_features, write_features
from petsml.data.split import load_split
from petsml.models.backbones import create_backbone
from petsml.models.base import pool
from petsml.models.model_dir import ModelDirError, read_model_dir
from petsml.testing.plugins import NEAREST_MEAN, write_plugin
from petsml.testing.project import apply_overrides
from petsml.training import strategies
from stages import train as train_stage

REPO = Path(__file__).resolve().parents[1]
BREEDS = sorted(CLASS_ID)[:3]


def _params(**overrides) -> Params:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    settings = {
        "data.task": "breed",
        "model.backbone": "test_efficientnet",  # timm's tiny test network, random weights
        "model.pretrained": False,
        "model.image_size": 32,
        "model.early_block": -3,
        "feature_extractor.C": [0.1, 1.0],
    } | overrides
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


def test_every_row_holds_together_and_config_holds_no_copy_of_the_names():
    from petsml.catalog.refs import resolve

    rows = catalog.rows().values()
    assert tuple(catalog.names()) == tuple(r.name for r in rows)
    for row in rows:
        assert callable(resolve(row.fit)), row
        assert (row.head is not None) == (row.kind == "frozen"), row
        assert (row.block_lrs is not None) == (row.kind == "trained"), row
        if row.settings:  # its params.yaml section is typed by its own model
            assert Params.model_fields[row.name].annotation == (resolve(row.settings) | None)
    assert {catalog.for_cell(c) for c in catalog.CELLS} <= set(catalog.names())
    assert catalog.baseline() == "scratch"
    source = (REPO / "petsml" / "config.py").read_text()
    assert not any(f'"{name}"' in source for name in catalog.names())  # names live in rows


def test_an_unknown_strategy_gets_a_clear_error_naming_the_known_ones(tmp_path):
    with pytest.raises(strategies.TrainingError, match="unknown strategy 'bogus'.*scratch"):
        train_stage.train("bogus", _params(), tmp_path / "bogus")
    with pytest.raises(ConfigError, match=r"train.strategies: .*unknown strategy 'bogus'"):
        _params(**{"train.strategies": ["feature_extractor", "bogus"]})


@pytest.fixture
def installed_toy(tmp_path, monkeypatch):
    """The nearest-mean strategy as an installed plug-in: one module, one row."""
    folder = write_plugin(tmp_path / "site", "toy_strategy", NEAREST_MEAN,
                          {catalog.ENTRY_POINTS: {"nearest_mean": "toy_strategy:ROW"}})  # fmt: skip
    monkeypatch.syspath_prepend(str(folder))
    catalog.rows.cache_clear()
    yield
    monkeypatch.undo()
    catalog.rows.cache_clear()
    assert "nearest_mean" not in catalog.names()


@pytest.mark.integration
def test_an_installed_strategy_trains_via_the_stage_with_no_params_section(
    installed_toy, feature_data, tmp_path
):
    """One module and one row (an entry point), nothing else edited: not even a params.yaml
    section, since the row declares no settings."""
    splits, features = feature_data
    assert "nearest_mean" in catalog.names()
    params = _params(**{"train.strategies": ["feature_extractor", "nearest_mean"]})
    assert params.settings_of("nearest_mean") is None
    out = tmp_path / "models" / "nearest_mean"
    summary = train_stage.train(
        "nearest_mean", params, out, features_dir=features, splits_dir=splits, excluded_file=None,
        checkpoints=tmp_path / "checkpoints",
    )  # fmt: skip
    folder = read_model_dir(out)
    assert folder.summary == summary and summary["val_accuracy"] == 1.0
    assert folder.spec["strategy"] == "nearest_mean" and folder.spec["feature"] == "early"
    assert folder.spec["frozen_backbone"] is True  # evaluated from the one frozen pass
    val = read_features(features, "val")
    labels = load_split(splits / "val.csv", "breed")["label"].to_numpy()
    with torch.no_grad():
        early = val.block(folder.model.backbone.early_index)
        logits = folder.model.head(torch.from_numpy(np.ascontiguousarray(early)))
    assert (logits.argmax(1).numpy() == labels[::-1]).all()  # the npz rows are reversed


def test_a_broken_plugin_is_named(tmp_path, monkeypatch):
    folder = write_plugin(tmp_path / "site", "bad_strategy", "ROW = 42\n",
                          {catalog.ENTRY_POINTS: {"bad": "bad_strategy:ROW"}})  # fmt: skip
    monkeypatch.syspath_prepend(str(folder))
    catalog.rows.cache_clear()
    try:
        with pytest.raises(PluginError, match="'bad'.*must name a StrategyRow"):
            catalog.rows()
    finally:
        catalog.rows.cache_clear()


@pytest.mark.integration
def test_a_feature_strategy_dispatched_by_the_stage_writes_the_model_folder(feature_data, tmp_path):
    splits, features = feature_data
    out = tmp_path / "models" / "feature_extractor"
    (out / "stale.txt").parent.mkdir(parents=True)
    (out / "stale.txt").write_text("from an earlier run")
    summary = train_stage.train(
        "feature_extractor",
        _params(),
        out,
        features_dir=features,
        splits_dir=splits,
        excluded_file=None,
    )
    assert sorted(p.name for p in out.iterdir()) == ["history.json", "model.pt", "summary.json"]
    folder = read_model_dir(out)
    assert folder.summary == summary and summary["params"]["C_grid"] == [0.1, 1.0]
    assert folder.history["epochs"] == [] and len(folder.history["search"]) == 2
    assert folder.spec["strategy"] == "feature_extractor"


@pytest.mark.integration
def test_reading_a_model_folder_names_the_missing_file(feature_data, tmp_path):
    splits, features = feature_data
    out = tmp_path / "m"
    train_stage.train(
        "svm_early", _params(), out, features_dir=features, splits_dir=splits, excluded_file=None
    )
    assert read_model_dir(out, load_model=False).model is None
    (out / "summary.json").unlink()
    with pytest.raises(ModelDirError, match=r"summary\.json: missing"):
        read_model_dir(out)
    (out / "model.pt").unlink()
    with pytest.raises(ModelDirError, match=r"model\.pt: missing"):
        read_model_dir(out)
