"""Fixtures of the registry tests (test_registry.py, test_registry_store.py): a real model.pt,
an MLflow SQLite store migrated once per module and copied per test, and one execution.

A pytest plugin (``pytest_plugins`` in conftest.py), so both modules share the code; each builds
its own module-scoped copies.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from petsml.data.breeds import BREEDS
from tests.models import BACKBONE
from tests.predictions import predictions_table
from tests.tracking import execution


@pytest.fixture(scope="module")
def model_pt(tmp_path_factory) -> Path:
    """A real model.pt: the tiny timm network with a 37-breed head, saved by save_classifier."""
    import torch

    from petsml.models.backbones import create_backbone
    from petsml.models.classifier import Classifier, save_classifier

    torch.manual_seed(0)
    backbone = create_backbone(BACKBONE, pretrained=False, early_block=-3, image_size=32)
    model = Classifier(backbone, len(BREEDS), feature="penultimate")
    path = tmp_path_factory.mktemp("model") / "model.pt"
    meta = {
        "strategy": "finetune_top",
        "task": "breed",
        "class_names": list(BREEDS),
        "decode_size": 40,
        "backbone": BACKBONE,
    }
    save_classifier(model, path, meta)
    return path


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory) -> Path:
    """An MLflow SQLite database with its schema built once (migrations take seconds)."""
    from mlflow import MlflowClient

    db = tmp_path_factory.mktemp("store") / "mlflow.db"
    client = MlflowClient(tracking_uri=f"sqlite:///{db}", registry_uri=f"sqlite:///{db}")
    client.search_experiments()
    client.search_registered_models()
    return db


@pytest.fixture
def tracking(tmp_path, monkeypatch, empty_store) -> dict:
    """A fresh SQLite tracking + registry store for one test (a copy of the empty one)."""
    from petsml.tracking import store

    db = tmp_path / "mlruns" / "mlflow.db"
    db.parent.mkdir()
    shutil.copyfile(empty_store, db)
    uri = f"sqlite:///{db}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    store.configure(tmp_path)
    return {"uri": uri, "experiment_id": store.get_or_create_experiment("pets-test", uri)}


def one(tracking, model_pt, correct: np.ndarray, key: str, val: float = 0.8) -> dict:
    return execution(tracking, model_pt, {"finetune_top": (val, predictions_table(correct))}, key)
