"""`dvc repro` of the whole pipeline on a fresh copy, fed by a loopback mirror.

Checks what a user sees: metrics for every listed strategy, one MLflow run per strategy grouped
under the execution (read back through MlflowClient), a champion in the registry, and a second
`dvc repro` that does nothing and logs no duplicate runs.
"""

from __future__ import annotations

import json

import pytest

from tests.project import E2E_STRATEGIES as STRATEGIES

# the run itself is the session fixture ``pipeline_run`` (tests/conftest.py), shared with
# test_store_recovery_e2e (XDIST_SHARED there: one worker runs both, so it is built once)
pytestmark = pytest.mark.slow


def test_metrics_cover_every_strategy(pipeline_run):
    project, *_ = pipeline_run
    metrics = json.loads((project / "reports/metrics.json").read_text())
    assert set(metrics) == set(STRATEGIES)
    for values in metrics.values():
        for key in (
            "val_accuracy",
            "test_accuracy",
            "test_top5",
            "test_macro_f1",
            "test_ece",
            "train_seconds",
        ):
            assert key in values


def test_offline_backbone_features_beat_chance_and_scratch(pipeline_run):
    project, *_ = pipeline_run
    metrics = json.loads((project / "reports/metrics.json").read_text())
    chance = 1 / 4
    assert metrics["feature_extractor"]["test_accuracy"] > 2 * chance
    assert metrics["feature_extractor"]["test_accuracy"] > metrics["scratch"]["test_accuracy"]


def test_mlflow_holds_one_child_per_strategy_under_one_parent(pipeline_run):
    from mlflow.tracking import MlflowClient

    project, tracking, *_ = pipeline_run
    client = MlflowClient(tracking_uri=tracking, registry_uri=tracking)
    experiment = client.get_experiment_by_name("oxford-pets")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1  # the second repro logged nothing new
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    assert sorted(r.data.tags.get("strategy") for r in children) == sorted(STRATEGIES)
    for child in children:
        assert "test_accuracy" in child.data.metrics


def test_champion_is_registered_with_strategy_tags(pipeline_run):
    from mlflow.tracking import MlflowClient

    _, tracking, *_ = pipeline_run
    version = MlflowClient(tracking_uri=tracking, registry_uri=tracking).get_model_version_by_alias(
        "oxford-pets-breed", "champion"
    )
    assert version.tags.get("strategy") in STRATEGIES
    assert any(key.startswith("test_accuracy") or key == "val_accuracy" for key in version.tags)


def test_second_repro_runs_nothing(pipeline_run):
    *_, second = pipeline_run
    lines = second.stdout.splitlines()
    ran = [line.split("'")[1] for line in lines if line.startswith("Running stage '")]
    assert ran == ["mlflow_store"]  # only the always-run check of the MLflow store
