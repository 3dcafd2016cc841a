"""The track stage against a real MLflow store: one parent, one child per strategy, no duplicates.

The project directory is built by hand (tiny random-init models, metrics, evaluation files,
split CSVs, a dvc.lock) so the test needs neither training nor DVC. Everything is read back
through ``MlflowClient``, never through the tracker's own return values.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.models import BACKBONE
from tests.tracking import (
    EPOCHS,
    EXPERIMENT,
    METRICS,
    RAW_MD5,
    REPO,
    SPLITS_MD5,
    STRATEGIES,
    build_project,
    git,
    tracking_from,
    write_params,
)

pytestmark = pytest.mark.integration


def _series(client, run_id: str, key: str) -> tuple[list[int], list[float]]:
    points = sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
    return [step for step, _ in points], [value for _, value in points]


def _runs(client, experiment_id: str):
    runs = client.search_runs([experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return parents, children


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    """Track the project twice (in-process, then a fresh ``python -m stages.track``)."""
    from mlflow import MlflowClient

    from stages import track

    root = tmp_path_factory.mktemp("track")
    project = build_project(root)
    advice = {"cell": "small+similar", "strategy": "feature_extractor"}  # as advise writes it
    (project / "reports" / "advice.json").write_text(json.dumps(advice))
    (project / "reports" / "advice.md").write_text("# Advice\n")
    uri = f"sqlite:///{root / 'store' / 'mlflow.db'}"
    with tracking_from(project, uri):
        track.main()
        first = json.loads((project / "reports" / "mlflow_runs.json").read_text())
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        again = subprocess.run(
            [sys.executable, "-m", "stages.track"],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert again.returncode == 0, again.stderr[-4000:]
        second = json.loads((project / "reports" / "mlflow_runs.json").read_text())
        yield {
            "project": project,
            "uri": uri,
            "client": MlflowClient(tracking_uri=uri),
            "first": first,
            "second": second,
            "rerun_log": again.stderr,
        }


def test_one_parent_and_one_child_per_strategy_even_when_rerun(tracked):
    client = tracked["client"]
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment is not None
    assert experiment.artifact_location == (Path(tracked["uri"][10:]).parent / "artifacts").as_uri()
    parents, children = _runs(client, experiment.experiment_id)
    assert len(parents) == 1, [p.info.run_name for p in parents]
    assert len(children) == len(STRATEGIES)
    parent = parents[0]
    assert all(c.data.tags["mlflow.parentRunId"] == parent.info.run_id for c in children)
    assert sorted(c.data.tags["strategy"] for c in children) == sorted(STRATEGIES)
    assert all(r.info.status == "FINISHED" for r in [parent, *children])
    # mlflow_runs.json points at those runs, and the rerun wrote the same record
    record = tracked["second"]
    assert record == tracked["first"]
    assert record["tracking_uri"] == tracked["uri"]
    assert record["experiment_id"] == experiment.experiment_id
    assert record["parent_run_id"] == parent.info.run_id
    assert record["run_key"] == parent.data.tags["run_key"]
    by_strategy = {c.data.tags["strategy"]: c for c in children}
    assert record["children"] == {s: r.info.run_id for s, r in by_strategy.items()}
    for strategy, child in by_strategy.items():
        model_id = child.outputs.model_outputs[0].model_id
        assert record["model_uris"][strategy] == f"models:/{model_id}"
    assert "already tracked" in tracked["rerun_log"]


def test_children_carry_params_curves_metrics_tags(tracked):
    client = tracked["client"]
    children = {s: client.get_run(r) for s, r in tracked["second"]["children"].items()}
    head = git(tracked["project"], "rev-parse", "HEAD")
    for strategy, run in children.items():
        tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
        assert tags["strategy"] == strategy and tags["task"] == "breed"
        assert tags["backbone"] == BACKBONE
        assert tags["git_commit"] == head
        assert tags["dvc_data_hash"] == SPLITS_MD5 and tags["dvc_raw_hash"] == RAW_MD5
        assert params["strategy"] == strategy
        assert params["model.backbone"] == BACKBONE and params["data.task"] == "breed"
        assert params["train.seed"] == "0"
        other = next(s for s in STRATEGIES if s != strategy)
        assert not any(k.startswith(f"{other}.") for k in params)
        assert any(k.startswith(f"{strategy}.") for k in params)
        for key, value in METRICS[strategy].items():
            assert metrics[key] == pytest.approx(value), key

    trained = children["finetune_top"]
    assert trained.data.params["finetune_top.lr"] == "0.001"
    for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds"):
        steps, values = _series(client, trained.info.run_id, f"epoch/{key}")
        assert steps == [e["epoch"] for e in EPOCHS], key
        assert values == pytest.approx([e[key] for e in EPOCHS]), key
    assert trained.data.metrics["best_epoch"] == 2

    frozen = children["feature_extractor"]
    assert frozen.data.params["feature_extractor.C"] == "[0.01, 0.03, 0.1, 0.3, 1.0, 3.0]"
    assert frozen.data.params["fit.C"] == "1.0"
    assert _series(client, frozen.info.run_id, "search/C") == ([0, 1], [0.1, 1.0])
    steps, values = _series(client, frozen.info.run_id, "search/val_accuracy")
    assert steps == [0, 1] and values == pytest.approx([0.4, 0.6])
    assert client.get_metric_history(frozen.info.run_id, "epoch/train_loss") == []


def test_final_metrics_are_single_values_at_one_step_so_the_ui_compares_strategies(tracked):
    """Evaluated metrics: one point each, all at step 0, frozen and trained strategies alike;
    the per-epoch val_accuracy lives under epoch/val_accuracy, not under the final key."""
    client = tracked["client"]
    for strategy, run_id in tracked["second"]["children"].items():
        for key, value in METRICS[strategy].items():
            assert _series(client, run_id, key) == ([0], [pytest.approx(value)]), (strategy, key)
        run = client.get_run(run_id)
        assert run.info.run_name == strategy  # one backbone in the experiment: no suffix


def test_collapsed_parent_shows_the_chosen_strategy_and_the_comparison(tracked):
    from mlflow.tracking.artifact_utils import _download_artifact_from_uri

    client = tracked["client"]
    parent = client.get_run(tracked["second"]["parent_run_id"])
    chosen = max(METRICS, key=lambda s: METRICS[s]["val_accuracy"])
    assert parent.data.tags["chosen_strategy"] == chosen == "feature_extractor"
    assert parent.data.metrics == pytest.approx(METRICS[chosen])
    assert chosen in parent.data.tags["mlflow.note.content"]
    files = {f.path for f in client.list_artifacts(parent.info.run_id, "comparison")}
    assert files == {"comparison/strategies.json", "comparison/strategies.png"}
    table = json.loads(
        Path(
            _download_artifact_from_uri(f"runs:/{parent.info.run_id}/comparison/strategies.json")
        ).read_text()
    )
    rows = [dict(zip(table["columns"], row, strict=True)) for row in table["data"]]
    assert {r["strategy"]: r["test_accuracy"] for r in rows} == pytest.approx(
        {s: m["test_accuracy"] for s, m in METRICS.items()}
    )
    assert {r["backbone"] for r in rows} == {BACKBONE}
    # log_table registers the table so the UI's artifact view and evaluation tab find it
    assert "comparison/strategies.json" in parent.data.tags["mlflow.loggedArtifacts"]


def test_the_advice_is_on_the_parent_run_and_searchable(tracked):
    client = tracked["client"]
    parent = client.get_run(tracked["second"]["parent_run_id"])
    assert parent.data.tags["advice_cell"] == "small+similar"
    assert parent.data.tags["advice_strategy"] == "feature_extractor"
    files = {f.path for f in client.list_artifacts(parent.info.run_id, "advice")}
    assert files == {"advice/advice.json", "advice/advice.md"}
    found = client.search_runs(
        [tracked["second"]["experiment_id"]], "tags.advice_strategy = 'feature_extractor'"
    )
    assert [r.info.run_id for r in found] == [parent.info.run_id]


def test_experiment_is_model_training_with_a_shared_strategies_view(tracked):
    client = tracked["client"]
    record = tracked["second"]
    experiment = client.get_experiment(record["experiment_id"])
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    view = json.loads(experiment.tags["mlflow.sharedViewState.strategies"])
    assert view["orderByKey"] == "metrics.`val_accuracy`"
    assert "metrics.`test_accuracy`" in view["selectedColumns"]
    # the view's filter selects exactly this execution's strategy runs
    found = client.search_runs([experiment.experiment_id], filter_string=view["searchFilter"])
    assert {r.info.run_id for r in found} == set(record["children"].values())
    assert record["ui_path"] == (
        f"/#/experiments/{experiment.experiment_id}/runs?workflowType=machine_learning"
        "&viewStateShareKey=strategies"
    )


def test_children_have_datasets_artifacts_and_model(tracked):
    client = tracked["client"]
    project = tracked["project"]
    for strategy, run_id in tracked["second"]["children"].items():
        run = client.get_run(run_id)
        inputs = {
            next(t.value for t in d.tags if t.key == "mlflow.data.context"): d.dataset
            for d in run.inputs.dataset_inputs
        }
        assert set(inputs) == {"training", "validation", "test"}
        for context, split in (("training", "train"), ("validation", "val"), ("test", "test")):
            dataset = inputs[context]
            csv = project / "data" / "splits" / f"{split}.csv"
            assert dataset.digest == hashlib.md5(csv.read_bytes()).hexdigest()
            assert dataset.name == f"{EXPERIMENT}-breed-{split}"
            assert json.loads(dataset.source)["uri"] == f"data/splits/{split}.csv"
            assert json.loads(dataset.profile)["num_rows"] == len(pd.read_csv(csv))
        eval_files = {Path(f.path).name for f in client.list_artifacts(run_id, "eval")}
        assert {"predictions.csv", "per_class.csv", "confused_pairs.csv", "confusion.png",
                "misclassified.png", "reliability.png"} <= eval_files  # fmt: skip
        training = {Path(f.path).name for f in client.list_artifacts(run_id, "training")}
        assert training == {"history.json", "summary.json"}
        model_id = run.outputs.model_outputs[0].model_id
        model = client.get_logged_model(model_id)
        assert model.source_run_id == run_id and model.tags["strategy"] == strategy
        model_files = {Path(f.path).name for f in client.list_logged_model_artifacts(model_id)}
        assert {"MLmodel", "requirements.txt", "input_example.json"} <= model_files
        # the evaluated metrics are linked to the logged model as well
        assert {m.key for m in model.metrics} >= set(METRICS[strategy])
    parent_id = tracked["second"]["parent_run_id"]
    validation = {f.path for f in client.list_artifacts(parent_id, "validation")}
    assert "validation/summary.json" in validation and "validation/data_docs" in validation
    pipeline = {Path(f.path).name for f in client.list_artifacts(parent_id, "pipeline")}
    assert {"params.yaml", "dvc.lock", "metrics.json"} <= pipeline


def test_changed_metrics_make_a_new_parent(tracked):
    from stages import track

    project, client = tracked["project"], tracked["client"]
    metrics_path = project / "reports" / "metrics.json"
    old_cwd = Path.cwd()
    old_env = os.environ.get("MLFLOW_TRACKING_URI")
    changed = json.loads(metrics_path.read_text())
    changed["finetune_top"]["test_accuracy"] = 0.61
    metrics_path.write_text(json.dumps(changed))
    # an experiment made before the kind tag existed gets it on the next track
    experiment_id = tracked["second"]["experiment_id"]
    client.delete_experiment_tag(experiment_id, "mlflow.experimentKind")
    os.environ["MLFLOW_TRACKING_URI"] = tracked["uri"]
    os.chdir(project)
    try:
        track.main()
    finally:
        os.chdir(old_cwd)
        if old_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = old_env
    record = json.loads((project / "reports" / "mlflow_runs.json").read_text())
    assert record["parent_run_id"] != tracked["second"]["parent_run_id"]
    assert record["run_key"] != tracked["second"]["run_key"]
    experiment = client.get_experiment_by_name(EXPERIMENT)
    parents, children = _runs(client, experiment.experiment_id)
    assert len(parents) == 2 and len(children) == 2 * len(STRATEGIES)
    new = client.get_run(record["children"]["finetune_top"])
    assert new.data.metrics["test_accuracy"] == pytest.approx(0.61)
    assert new.data.tags["mlflow.parentRunId"] == record["parent_run_id"]
    tags = client.get_experiment(experiment_id).tags
    assert tags["mlflow.experimentKind"] == "custom_model_development"
    view = json.loads(tags["mlflow.sharedViewState.strategies"])
    assert record["parent_run_id"] in view["searchFilter"]  # the view follows the newest run


def test_missing_inputs_name_the_file_and_the_fix(tmp_path, monkeypatch):
    from petsml.config import load_params
    from petsml.tracking.runs import TrackingError, dvc_data_hashes, git_commit, track_pipeline

    write_params(tmp_path)
    monkeypatch.chdir(tmp_path)
    params = load_params()
    with pytest.raises(TrackingError, match=r"metrics\.json.*dvc repro evaluate"):
        track_pipeline(params)
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "metrics.json").write_text(json.dumps(METRICS))
    with pytest.raises(TrackingError, match=r"model\.pt.*dvc repro train@feature_extractor"):
        track_pipeline(params)
    assert dvc_data_hashes(tmp_path) == {"dvc_data_hash": "unknown", "dvc_raw_hash": "unknown"}
    assert git_commit(tmp_path)[0] == "unknown"
    assert not (tmp_path / "mlruns").exists()  # nothing was logged


def test_default_store_is_sqlite_under_mlruns(tmp_path, monkeypatch):
    import mlflow

    from petsml.tracking import store

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    previous = mlflow.get_tracking_uri()
    try:
        assert store.configure() == "sqlite:///mlruns/mlflow.db"
        assert mlflow.get_tracking_uri() == "sqlite:///mlruns/mlflow.db"
        assert (tmp_path / "mlruns" / "artifacts").is_dir()
        # new experiments keep their artifacts in mlruns/artifacts, relative like the database
        uri = store.tracking_uri()
        assert store.artifact_root(uri) == "mlruns/artifacts"
        # mlflow.set_tracking_uri exported the URI to the environment; that is not an override
        other = tmp_path / "other"
        assert store.tracking_uri(other) == f"sqlite:///{other}/mlruns/mlflow.db"
        assert store.configure(other) == f"sqlite:///{other}/mlruns/mlflow.db"
        # a real override wins, and a tracking server chooses its own artifact store
        monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
        assert store.tracking_uri() == "http://127.0.0.1:5000"
        assert store.artifact_root(store.tracking_uri()) is None
    finally:
        mlflow.set_tracking_uri(previous)


# The track stage in a process of its own, SIGKILLed while it logs its first strategy's model:
# the parent run and that child are RUNNING in the store, as a killed `dvc repro track` leaves
# them (a real kill: no handler, no atexit, MLflow cannot end them).
KILLED_TRACK = """
import os, signal
import petsml.tracking.pyfunc as pyfunc
pyfunc.log_pyfunc_model = lambda *args, **kwargs: os.kill(os.getpid(), signal.SIGKILL)
from stages import track
track.main()
"""


def test_a_track_killed_mid_run_is_marked_killed_by_the_rerun_not_left_running(tmp_path):
    """SIGKILL during `track` left a parent RUNNING forever beside an orphaned child, and the
    re-run logged a second parent next to them. Now the re-run marks what the dead process left
    KILLED (saying why) and logs the execution once: nothing stays RUNNING."""
    from mlflow import MlflowClient

    from petsml.tracking.run_lookup import TAG_ENDED
    from stages import track

    project = build_project(tmp_path)
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    env = dict(os.environ, MLFLOW_TRACKING_URI=uri)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    killed = subprocess.run([sys.executable, "-c", KILLED_TRACK], cwd=project, env=env,
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert killed.returncode == -9, killed.stderr[-3000:]
    client = MlflowClient(tracking_uri=uri)
    (experiment,) = [e for e in client.search_experiments() if e.name == EXPERIMENT]
    before = {r.info.run_id: r.info.status for r in client.search_runs([experiment.experiment_id])}
    assert sorted(before.values()) == ["RUNNING", "RUNNING"], before  # parent + first child

    with tracking_from(project, uri):
        track.main()
    runs = client.search_runs([experiment.experiment_id])
    assert not [r for r in runs if r.info.status == "RUNNING"], "a run is still RUNNING"
    for run_id in before:
        dead = client.get_run(run_id)
        assert (
            dead.info.status == "KILLED" and "ended before the run did" in dead.data.tags[TAG_ENDED]
        ), dead.data.tags
    parents, children = _runs(client, experiment.experiment_id)
    finished = [p for p in parents if p.info.status == "FINISHED"]
    assert len(finished) == 1 and finished[0].info.run_id not in before
    mine = [c for c in children if c.data.tags["mlflow.parentRunId"] == finished[0].info.run_id]
    assert len(mine) == len(STRATEGIES) and all(c.info.status == "FINISHED" for c in mine)
