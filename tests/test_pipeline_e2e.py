"""`dvc repro` of the whole pipeline on a fresh copy, fed by a loopback mirror.

Checks what a user sees: metrics for every listed strategy, one MLflow run per strategy grouped
under the execution (read back through MlflowClient), a champion in the registry, and a second
`dvc repro` that does nothing and logs no duplicate runs.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from petsml.testing.project import E2E_STRATEGIES as STRATEGIES
from petsml.testing.project import changed_stages, dvc, params_log, pass_log, run, tool_env

# the run itself is the session fixture ``pipeline_run`` (tests/conftest.py), shared with
# test_store_recovery_e2e (XDIST_SHARED there: one worker runs both, so it is built once)
pytestmark = [pytest.mark.slow(seconds=140), pytest.mark.integration]


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


def test_every_photo_passes_the_frozen_backbone_once_and_the_finetuned_model_once(pipeline_run):
    """Counted, not timed: the one frozen pass (featurize) serves advise, the frozen
    strategies, their evaluation and the similar-photo index; a trained strategy's model runs
    once more over each photo (its test logits, its index rows); nothing passes again."""
    import pandas as pd

    from petsml.data.passes import read_log

    project, *_ = pipeline_run
    photos = sum(
        len(pd.read_csv(project / f"data/splits/{s}.csv")) for s in ("train", "val", "test")
    )
    seen: dict[str, int] = {}
    for entry in read_log(pass_log(project)):
        seen[entry["network"]] = seen.get(entry["network"], 0) + entry["images"]
    assert seen == {"frozen efficientnet_lite0": photos, "scratch": photos}


def test_every_stage_declares_every_param_it_reads(pipeline_run):
    """A value a stage reads but dvc.yaml does not list is a result DVC keeps calling up to
    date after that value changed. Each stage process recorded its reads (PETS_PARAMS_LOG);
    each must be covered by the stage's params (a listed key or section, or all of
    params.yaml), or for train@<s> by its data/strategies/<s>.json dep."""
    import json
    import os

    from dvc.repo import Repo

    project, *_ = pipeline_run
    declared: dict[str, tuple[set[str], set[str]]] = {}
    with Repo(str(project)) as repo:
        for stage in repo.index.stages:
            keys, files = set(), set()
            for dep in stage.deps:
                path = os.path.relpath(dep.fs_path, repo.root_dir)
                if hasattr(dep, "params"):
                    keys |= set(dep.params) if dep.params else {"*"}
                else:
                    files.add(path)
            declared[stage.name] = (keys, files)

    def covered(key: str, keys: set[str], files: set[str]) -> bool:
        if "*" in keys or "params.yaml" in files:
            return True
        if any(key == k or key.startswith(k + ".") for k in keys):
            return True
        section = key.split(".", 1)[0]
        return f"data/strategies/{section}.json" in files

    missing = {}
    seen = set()
    for line in params_log(project).read_text().splitlines():
        record = json.loads(line)
        argv = record["argv"]
        module = Path(argv[0]).stem
        name = {"check_params": "params"}.get(module, module)
        if name == "train":
            name = f"train@{argv[1]}"
        if name not in declared:  # not a stage process (dvc's own helpers)
            continue
        seen.add(name)
        keys, files = declared[name]
        lacking = [k for k in record["keys"] if not covered(k, keys, files)]
        if lacking:
            missing[name] = lacking
    assert not missing, f"stages read params their dvc.yaml entry does not list: {missing}"
    assert {"featurize", "advise", "evaluate", "compare", "track", "register"} <= seen


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


def test_compare_ranks_what_ran_with_its_costs_and_checks_the_advice(pipeline_run, monkeypatch):
    from mlflow.tracking import MlflowClient

    project, tracking, *_ = pipeline_run
    metrics = json.loads((project / "reports/metrics.json").read_text())
    report = json.loads((project / "reports/comparison.json").read_text())
    rows = {row["strategy"]: row for row in report["rows"]}
    assert set(rows) == set(STRATEGIES)
    vals = [row["val_accuracy"] for row in report["rows"]]
    assert vals == sorted(vals, reverse=True)
    for strategy, row in rows.items():
        assert row["test_accuracy"] == metrics[strategy]["test_accuracy"]
        assert row["latency_ms_batch1"] > 0 and row["latency_ms_batch16"] > 0
        assert row["parameters"] > 0 and row["model_mb"] > 0
        gain = metrics[strategy]["test_accuracy"] - metrics["scratch"]["test_accuracy"]
        expected = None if strategy == "scratch" else pytest.approx(gain, abs=1e-6)
        assert row["transfer_gain"] == expected
    assert report["advice"]["advised"] and report["advice"]["matched"] in (True, False)
    assert report["advice"]["statement"] in (project / "reports/comparison.md").read_text()
    assert "data:image/png;base64," in (project / "reports/comparison.html").read_text()

    monkeypatch.chdir(project)  # the default store's artifacts are addressed from the project
    client = MlflowClient(tracking_uri=tracking)
    experiment = client.get_experiment_by_name("oxford-pets")
    (parent,) = client.search_runs([experiment.experiment_id], "tags.`petsml.role` = 'pipeline'")
    logged = {f.path for f in client.list_artifacts(parent.info.run_id, "comparison")}
    assert {"comparison/comparison.md", "comparison/comparison.html"} <= logged


def _mtimes(project: Path, outs: list[str]) -> dict[str, int]:
    """mtime (ns) of every file under the given stage outputs."""
    found = {}
    for out in outs:
        path = project / out
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        found |= {p.relative_to(project).as_posix(): p.stat().st_mtime_ns for p in files}
    return found


def test_a_second_clone_pulls_every_output_from_a_dvc_remote_and_recomputes_nothing(
    pipeline_run, tmp_path
):
    """The team setup of docs/SCALING.md with a local-folder remote (DVC's code path for S3/GCS
    too): push after the run; a second clone pulls and its `dvc repro` recomputes nothing. Both
    clones use one MLflow store (a tracking server in a team; here the run's SQLite file), so
    the always-run `mlflow_store` check finds the runs and `track`/`register` stay skipped."""
    import yaml
    from mlflow.tracking import MlflowClient

    project, tracking, *_ = pipeline_run
    env = tool_env()
    env.pop("MLFLOW_TRACKING_URI", None)  # the run used the default store, mlruns/mlflow.db
    dvc(project, "remote", "add", "-d", "shared", str(tmp_path / "remote"))
    run(project, "git", "add", "-A")
    run(project, "git", "commit", "-qm", "pipeline run, shared DVC remote")
    dvc(project, "push", env=env)

    clone = tmp_path / "clone"
    run(tmp_path, "git", "clone", "-q", str(project), str(clone))
    assert not (clone / "data/decoded").exists()  # outputs come from the remote, not git
    # one store for both clones (a tracking server in a team): the clone's mlruns/ is the first's
    shutil.rmtree(clone / "mlruns")
    (clone / "mlruns").symlink_to(project / "mlruns", target_is_directory=True)
    dvc(clone, "pull", env=env)
    lock = yaml.safe_load((clone / "dvc.lock").read_text())["stages"]
    outs = [o["path"] for stage in lock.values() for o in stage.get("outs", [])]
    assert {"data/decoded", "models/feature_extractor", "reports/metrics.json"} <= set(outs)
    assert changed_stages(clone, env=env) == set()
    before = _mtimes(clone, outs)

    again = dvc(clone, "repro", env=env, timeout=300)
    ran = [line.split("'")[1] for line in again.stdout.splitlines() if line.startswith("Running")]
    assert ran == ["mlflow_store"], again.stdout  # looks at the store, finds every run
    after = _mtimes(clone, outs)
    store_check = "reports/mlflow_store.json"
    assert {k: v for k, v in after.items() if k != store_check} == {
        k: v for k, v in before.items() if k != store_check
    }
    assert (clone / store_check).read_text() == (project / store_check).read_text()
    client = MlflowClient(tracking_uri=tracking, registry_uri=tracking)
    experiment = client.get_experiment_by_name("oxford-pets")
    parents = [
        r for r in client.search_runs([experiment.experiment_id])
        if "mlflow.parentRunId" not in r.data.tags
    ]  # fmt: skip
    assert len(parents) == 1  # the clone logged nothing new
