"""``pets status``: a fresh clone gets "nothing run yet" and exit 0 (and no store is created);
a registered project gets its champion's version, strategy and scores, the last run, the
store's health and the next step. ``dvc status`` runs for real."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from petsml.testing.project import make_project, tool_env

pytestmark = pytest.mark.integration


def test_a_fresh_clone_says_nothing_has_run_and_exits_0(tmp_path):
    project = make_project(tmp_path / "clone")
    done = subprocess.run(
        [sys.executable, "-m", "petsml.cli", "status", "--json"], cwd=project,
        env=tool_env(MLFLOW_TRACKING_URI=""), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1, "one JSON object under --json"
    status = json.loads(lines[0])
    assert status["store"]["exists"] is False
    assert status["models"] == {"champion": None, "challenger": None}
    assert status["last_run"] is None
    assert status["dvc_problem"] is None and "download" in status["stale_stages"]
    assert status["next"].startswith("nothing run yet: `pets run`")
    assert not (project / "mlruns" / "mlflow.db").exists(), "status only reads"

    text = subprocess.run(
        [sys.executable, "-m", "petsml.cli", "status"], cwd=project,
        env=tool_env(MLFLOW_TRACKING_URI=""), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert text.returncode == 0 and "next     nothing run yet" in text.stdout
    assert "store    " in text.stdout and "not created yet" in text.stdout


def test_a_registered_project_shows_its_champion_last_run_and_store(
    registered_project, tmp_path, monkeypatch, capsys
):
    from petsml.cli import main

    project, uri, _ = registered_project
    monkeypatch.chdir(tmp_path)  # status moves into the project; this puts the test back
    main(["status", "--json", "--params", str(project / "params.yaml"), "--tracking-uri", uri])
    status = json.loads(capsys.readouterr().out)
    champion = status["models"]["champion"]
    assert champion["version"] == "1" and champion["strategy"] == "feature_extractor"
    assert champion["val_accuracy"] == pytest.approx(0.6)
    assert champion["test_accuracy"] == pytest.approx(0.58)
    assert status["models"]["challenger"] == champion  # the first version is both
    assert status["next"].startswith("up to date"), "no other version waits"
    record = json.loads((project / "reports" / "mlflow_runs.json").read_text())
    assert status["last_run"]["parent_run_id"] == record["parent_run_id"]
    assert status["last_run"]["start_time"][:2] == "20"  # read from the MLflow parent run
    assert status["store"] == {"uri": uri, "exists": True, "missing": []}
    # not a DVC repository: the stages are unknown, and status still answers
    assert status["stale_stages"] is None and status["dvc_problem"].startswith("dvc status")

    main(["status", "--params", str(project / "params.yaml"), "--tracking-uri", uri])
    out = capsys.readouterr().out
    assert "@champion   v1  feature_extractor  val_accuracy 0.600  test_accuracy 0.580" in out
    assert ": healthy" in out
