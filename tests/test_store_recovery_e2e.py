"""A lost MLflow store is noticed by `dvc repro`: the real pipeline on a tiny project.

DVC cannot see inside the MLflow store, so the always-changed `mlflow_store` stage checks
that the store still holds the runs and versions that reports/mlflow_runs.json and
reports/registry.json name. Here the default store (mlruns/mlflow.db) is deleted after a full
run: the next `dvc repro` must track and register again (and nothing else), leave `dvc status`
clean apart from that check, and name runs and versions that exist (read back with sqlite3,
not through the pipeline's own code).
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import time

import pytest

from petsml.testing.project import dvc, tool_env

pytestmark = [pytest.mark.slow(seconds=60), pytest.mark.integration]
NAME = "oxford-pets-breed"


def _env() -> dict[str, str]:
    env = tool_env()
    env.pop("MLFLOW_TRACKING_URI", None)  # the project default: sqlite:///mlruns/mlflow.db
    return env


def _ran(result) -> set[str]:
    return {
        line.split("'")[1]
        for line in result.stdout.splitlines()
        if line.startswith("Running stage '")
    }


def _assert_reports_name_what_the_store_holds(project) -> dict:
    """Read with a fresh sqlite3 connection: an MlflowClient in this process would keep a
    pooled connection to the deleted database file and answer from it."""
    db = sqlite3.connect(project / "mlruns" / "mlflow.db")
    try:
        runs = json.loads((project / "reports/mlflow_runs.json").read_text())
        for run_id in [runs["parent_run_id"], *runs["children"].values()]:
            row = db.execute(
                "SELECT status, lifecycle_stage FROM runs WHERE run_uuid = ?", (run_id,)
            ).fetchone()
            assert row == ("FINISHED", "active"), run_id
        for model_id in runs["model_ids"].values():
            row = db.execute(
                "SELECT source_run_id FROM logged_models WHERE model_id = ?", (model_id,)
            ).fetchone()
            assert row is not None and row[0] in runs["children"].values()
        report = json.loads((project / "reports/registry.json").read_text())
        row = db.execute(
            "SELECT run_id FROM model_versions WHERE name = ? AND version = ?",
            (NAME, int(report["version"])),
        ).fetchone()
        assert row == (report["run_id"],)
        assert report["run_id"] == runs["children"][report["strategy"]]
        holder = db.execute(
            "SELECT version FROM registered_model_aliases WHERE name = ? AND alias = 'champion'",
            (NAME,),
        ).fetchone()
        assert holder is not None and str(holder[0]) == str(report["champion"])
    finally:
        db.close()
    return report


@pytest.fixture(scope="module")
def project(pipeline_run, tmp_path_factory):
    """A copy of the session's whole-pipeline run (tests/conftest.py), which test_pipeline_e2e
    reads: these tests delete its store. One xdist worker runs both (XDIST_SHARED)."""
    source, _, first, _ = pipeline_run
    assert {"track", "register", "mlflow_store"} <= _ran(first)
    path = tmp_path_factory.mktemp("recovery") / "p"
    shutil.copytree(source, path, symlinks=True)
    return path


def test_unchanged_store_reruns_nothing_and_costs_little(project):
    start = time.monotonic()
    again = dvc(project, "repro", env=_env(), timeout=300)
    seconds = time.monotonic() - start
    print(f"second `dvc repro` with nothing changed: {seconds:.1f} s")
    # costs little by construction: the one always-changed stage (~0.2 s of work) runs, nothing
    # else; the time printed above is information (benchmarks/ time things), not a verdict
    assert _ran(again) == {"mlflow_store"}, again.stdout


def test_deleted_store_is_tracked_and_registered_again(project):
    before = json.loads((project / "reports/registry.json").read_text())
    (project / "mlruns" / "mlflow.db").unlink()

    recovered = dvc(project, "repro", env=_env(), timeout=600)
    assert _ran(recovered) == {"mlflow_store", "track", "register"}, recovered.stdout
    assert "lacks what the reports name" in recovered.stderr + recovered.stdout

    report = _assert_reports_name_what_the_store_holds(project)
    # the same model (same run key, same strategy) is champion again, not "a first champion"
    assert report["strategy"] == before["strategy"]
    assert report["decision"] == "champion" and report["champion"] == report["version"]
    assert report["reason"].startswith("re-crowned")

    status = json.loads(dvc(project, "status", "--json", env=_env()).stdout or "{}")
    assert status == {"mlflow_store": ["always changed"]}
    assert _ran(dvc(project, "repro", env=_env(), timeout=300)) == {"mlflow_store"}


def test_run_cache_never_restores_runs_of_a_lost_store(project):
    # the reports are gone too: DVC's run cache holds a track result for these exact inputs,
    # but not for this (new) store, so track must log again instead of restoring stale ids
    (project / "mlruns" / "mlflow.db").unlink()
    (project / "reports" / "mlflow_runs.json").unlink()
    recovered = dvc(project, "repro", env=_env(), timeout=600)
    assert {"track", "register"} <= _ran(recovered), recovered.stdout
    assert "is cached" not in recovered.stdout
    _assert_reports_name_what_the_store_holds(project)
