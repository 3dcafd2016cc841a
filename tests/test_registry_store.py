"""The register stage and the store check, on a real MLflow registry (a tmp SQLite store).

Each "execution" is what the track stage leaves behind: a parent run, one child run per
strategy with metrics, tags, ``eval/predictions.csv`` and a real pyfunc model (a tiny
random-init timm network), and the ``mlflow_runs.json`` record that points at them.
Here: the register stage's recipe, a rebuilt registry, concurrent registrations and the store
check (the fixtures: tests/registry_data.py, shared with test_registry.py).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from petsml.tracking.model_registry import (
    CHALLENGER,
    CHAMPION,
    ModelRegistry,
)
from petsml.tracking.registration import VERSION_SCORE_KEYS, register_execution
from tests.predictions import N_TEST, masks, predictions_table
from tests.registry_data import one
from tests.tracking import execution

pytestmark = [pytest.mark.slow(seconds=30), pytest.mark.integration]

REPO = Path(__file__).resolve().parents[1]
NAME = "oxford-pets-breed"


# --------------------------------------------------------------------------- version tags


def test_version_scores_are_the_metrics_json_scores_without_the_training_time():
    """A version is tagged with the model's scores: every metrics.json key but train_seconds
    (a cost of training, not a quality of the model), in the card's table order."""
    from petsml.evaluation.evaluate import METRIC_KEYS

    assert VERSION_SCORE_KEYS == tuple(k for k in METRIC_KEYS if k != "train_seconds")


def test_register_stage_writes_the_report(tracking, model_pt, tmp_path, monkeypatch, capsys):
    from petsml.stage import run_stage
    from stages import register as stage

    champ, _ = masks(30, 5, 5)
    runs = one(tracking, model_pt, champ, "stage")
    project = tmp_path / "project"
    (project / "reports").mkdir(parents=True)
    (project / "params.yaml").write_text((REPO / "params.yaml").read_text())
    (project / "reports" / "mlflow_runs.json").write_text(json.dumps(runs))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "-m", "stages.register"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report_path = project / "reports" / "registry.json"
    report = json.loads(report_path.read_text())
    keys = {"model_name", "version", "strategy", "aliases", "decision", "p_value", "reason"}
    assert keys <= set(report)
    assert report["model_name"] == "oxford-pets-breed" and report["version"] == "1"
    assert report["decision"] == "champion" and report["aliases"] == [CHALLENGER, CHAMPION]

    monkeypatch.chdir(project)  # the same stage again, in-process: nothing new registered
    stage.main()
    again = json.loads(report_path.read_text())
    assert again["decision"] == "already_registered" and again["version"] == "1"
    assert len(ModelRegistry(NAME).versions()) == 1

    (project / "reports" / "mlflow_runs.json").unlink()
    with pytest.raises(SystemExit) as exit_info:
        run_stage("register", stage.main)
    assert exit_info.value.code == 1 and "dvc repro track" in capsys.readouterr().err


# --------------------------------------------------------------------------- a lost store


def test_rebuilt_registry_does_not_crown_a_model_that_lost_to_the_recorded_champion(
    tracking, model_pt, tmp_path, monkeypatch, empty_store
):
    """The probe: champion A (test 55/60); B's best-by-validation model (38/60) was rejected
    against it; then the store is lost and B is tracked again into an empty registry. B must
    not become "the first champion": it is judged against A's recorded test predictions (the
    artifacts outlive the database) and stays challenger; A, tracked again, is re-crowned."""
    from petsml.tracking import store
    from stages import register as stage

    project = tmp_path / "project"
    (project / "reports").mkdir(parents=True)
    (project / "params.yaml").write_text((REPO / "params.yaml").read_text())
    monkeypatch.chdir(project)

    def register(runs: dict) -> dict:  # what `dvc repro register` runs
        (project / "reports" / "mlflow_runs.json").write_text(json.dumps(runs))
        stage.main()
        return json.loads((project / "reports" / "registry.json").read_text())

    index = np.arange(N_TEST)
    a = {"feature_extractor": (0.90, predictions_table(index < 55))}
    b = {  # finetune_top has the best validation accuracy, svm_early the better test score
        "finetune_top": (0.95, predictions_table(index < 38)),
        "svm_early": (0.70, predictions_table(index < 50)),
    }
    assert register(execution(tracking, model_pt, a, "a"))["decision"] == "champion"
    rejected = register(execution(tracking, model_pt, b, "b"))
    assert (rejected["version"], rejected["strategy"], rejected["decision"]) == (
        "2", "finetune_top", "rejected",
    )  # fmt: skip

    # the store is lost: a new, empty database (the old artifacts stay where they were)
    rebuilt = tmp_path / "rebuilt" / "mlflow.db"
    rebuilt.parent.mkdir()
    shutil.copyfile(empty_store, rebuilt)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{rebuilt}")
    uri = store.configure(project)
    fresh = {"uri": uri, "experiment_id": store.get_or_create_experiment("pets-test", uri)}

    report = register(execution(fresh, model_pt, b, "b"))
    registry = ModelRegistry(NAME)
    assert report["strategy"] == "finetune_top"  # the best by validation is the candidate
    assert report["decision"] == "rejected" and report["champion"] is None
    assert registry.aliases() == {CHALLENGER: "1"}  # no champion rather than a worse one
    assert report["reason"].startswith("v1 vs lost champion v1 (feature_extractor")
    assert "not better" in report["reason"] and "pets promote 1" in report["reason"]
    assert report["comparison"]["champion_accuracy"] == pytest.approx(55 / 60)
    assert rejected["champion_record"]["strategy"] == "feature_extractor"
    assert report["lost_champion"]["run_id"] == rejected["champion_record"]["run_id"]
    assert json.loads(registry.version(1).tags["gate.lost_champion"])["version"] == "1"

    # the lost champion's pipeline state is tracked again: the same model is crowned again
    crowned = register(execution(fresh, model_pt, a, "a"))
    assert crowned["decision"] == "champion" and crowned["version"] == "2"
    assert crowned["reason"].startswith("re-crowned: the same model was champion v1")
    assert registry.aliases() == {CHAMPION: "2", CHALLENGER: "2"}
    assert "lost_champion" not in crowned


# --------------------------------------------------------------------------- racing gates


def _race_member(uri: str, runs: dict, delay_s: float, barrier, out: str) -> None:
    """One `register` in its own process; the gate is slowed down to widen the window between
    reading the champion and moving the alias (the comparison itself is unchanged)."""
    import time

    os.environ["MLFLOW_TRACKING_URI"] = uri
    from petsml.tracking import promotion, registration

    real_gate = promotion.gate

    def slow_gate(*args, **kwargs):
        time.sleep(delay_s)
        return real_gate(*args, **kwargs)

    promotion.gate = slow_gate
    barrier.wait(timeout=300)
    report = registration.register_execution(runs, NAME, 0.05)
    Path(out).write_text(json.dumps(report))


def test_two_concurrent_registrations_compare_against_each_other(tracking, model_pt, tmp_path):
    import multiprocessing

    index = np.arange(N_TEST)
    weak = one(tracking, model_pt, index < 20, "weak")
    better = one(tracking, model_pt, index < 35, "better")  # beats weak (15 for, 0 against)
    best = one(tracking, model_pt, index < 55, "best")  # beats better (20 for, 0 against)
    assert register_execution(weak, NAME, 0.05)["decision"] == "champion"

    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    # without a lock both would read v1 as champion; the slower (worse) one would win
    members = {
        "best": (best, 2.0),
        "better": (better, 4.0),
    }
    processes = {
        name: context.Process(
            target=_race_member,
            args=(tracking["uri"], runs, delay, barrier, str(tmp_path / f"{name}.json")),
        )
        for name, (runs, delay) in members.items()
    }
    for process in processes.values():
        process.start()
    for process in processes.values():
        process.join(timeout=600)
        assert process.exitcode == 0
    reports = {name: json.loads((tmp_path / f"{name}.json").read_text()) for name in members}

    registry = ModelRegistry(NAME)
    assert str(registry.champion().version) == reports["best"]["version"]
    compared = {
        name: registry.version(report["version"]).tags["gate.champion_version"]
        for name, report in reports.items()
    }
    # one gate ran against v1, the other against the winner of that first gate
    first, second = sorted(compared, key=lambda name: compared[name] != "1")
    assert compared[first] == "1"
    assert compared[second] == reports[first]["version"]
    for name, report in reports.items():
        assert report["reason"].startswith(f"v{report['version']} vs champion v{compared[name]}")
    if second == "better":  # the loser was judged against the champion it lost to
        assert reports["better"]["decision"] == "rejected"
        assert "not better" in reports["better"]["reason"]


# --------------------------------------------------------------------------- store fingerprint


def test_store_fingerprint_changes_only_when_the_store_loses_what_the_reports_name(
    tracking, model_pt, tmp_path, monkeypatch, empty_store
):
    from mlflow import MlflowClient

    from petsml.tracking import store, store_check

    project = tmp_path / "project"
    (project / "reports").mkdir(parents=True)
    runs = one(tracking, model_pt, masks(30, 5, 5)[0], "fp")
    (project / "reports" / "mlflow_runs.json").write_text(json.dumps(runs))
    report = register_execution(runs, NAME, 0.05)
    (project / "reports" / "registry.json").write_text(json.dumps(report))

    def fingerprint() -> str:
        record = store_check.refresh_fingerprint("pets-test", project)
        written = json.loads((project / "reports" / "mlflow_store.json").read_text())
        assert written == record and record["tracking_uri"] == store.tracking_uri(project)
        return record["store_id"]

    first = fingerprint()
    assert fingerprint() == first  # a healthy store: nothing changes downstream
    client = MlflowClient(tracking_uri=tracking["uri"], registry_uri=tracking["uri"])
    client.delete_model_version(NAME, report["version"])
    lost_version = fingerprint()
    assert lost_version != first
    # `register` runs again (its dependency changed) and writes a report the store holds
    report = register_execution(runs, NAME, 0.05)
    assert report["version"] == "2"
    (project / "reports" / "registry.json").write_text(json.dumps(report))
    assert fingerprint() == lost_version  # one new id per loss, then stable again
    client.delete_run(runs["children"]["finetune_top"])
    lost_run = fingerprint()
    assert lost_run not in (first, lost_version)

    # another store (a new server or database): the reports name runs it does not hold
    other = tmp_path / "other" / "mlflow.db"
    other.parent.mkdir()
    shutil.copyfile(empty_store, other)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{other}")
    moved = fingerprint()
    assert moved not in (first, lost_version, lost_run)
    assert MlflowClient(tracking_uri=f"sqlite:///{other}").get_experiment_by_name("pets-test")


def test_store_check_reads_sqlite_without_mlflow_and_agrees_with_the_client(
    tracking, model_pt, tmp_path
):
    from petsml.tracking import store, store_check

    project = tmp_path / "project"
    (project / "reports").mkdir(parents=True)
    runs = one(tracking, model_pt, masks(30, 5, 5)[0], "read")
    report = register_execution(runs, NAME, 0.05)
    (project / "reports" / "registry.json").write_text(json.dumps(report))
    stale = {**runs, "children": {**runs["children"], "svm_early": "0" * 32}}
    (project / "reports" / "mlflow_runs.json").write_text(json.dumps(stale))
    claims = store_check.read_claims(project)
    db = store.sqlite_path(tracking["uri"])
    answers = []
    for reader in (store_check._SqliteReader(db), store_check._ClientReader(tracking["uri"])):
        answers.append(store_check._inspect(reader, "pets-test", claims, tracking["uri"]))
        reader.close()
    assert answers[0] == answers[1]
    assert answers[0][1] == [f"run {'0' * 32}"]

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    code = (
        "import sys; from petsml.tracking import store_check; "
        f"store_check.refresh_fingerprint('pets-test', {str(project)!r}, out=None); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('mlflow', 'sqlalchemy')))"
    )
    (project / "reports" / "mlflow_runs.json").write_text(json.dumps(runs))
    store_check.refresh_fingerprint("pets-test", project)  # first contact tags the store
    checked = subprocess.run(
        [sys.executable, "-c", code], cwd=project, env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stderr[-3000:]
    assert checked.stdout.strip() == "[]"  # the healthy path never imports MLflow


# `register` in a process of its own, SIGKILLed right after the version is created, before any
# alias is set: what a killed `dvc repro register` leaves (a real kill, nothing can clean up).
KILLED_REGISTER = """
import json, os, signal, sys
from petsml.tracking.model_registry import ModelRegistry
from petsml.tracking.registration import register_execution
ModelRegistry.move_alias = lambda *args, **kwargs: os.kill(os.getpid(), signal.SIGKILL)
register_execution(json.loads(sys.argv[1]), sys.argv[2], 0.05)
"""


def test_a_register_killed_before_its_aliases_is_named_in_the_registry_view_and_history(
    tracking, model_pt, tmp_path, capsys
):
    """SIGKILL between creating a version and setting its aliases left a version with no alias
    and nothing saying so. The registry view (web page, /api/registry) and `pets history` now
    name it and the fix; the next register finishes it, and the note goes."""
    from petsml.cli import main
    from petsml.web.registry_view import registry_view

    runs = one(tracking, model_pt, masks(25, 2, 20)[0], "killed")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO),
               os.environ.get("PYTHONPATH")])))  # fmt: skip
    killed = subprocess.run([sys.executable, "-c", KILLED_REGISTER, json.dumps(runs), NAME],
                            env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert killed.returncode == -9, killed.stderr[-3000:]
    registry = ModelRegistry(NAME)
    assert [str(v.version) for v in registry.versions()] == ["1"] and registry.aliases() == {}

    view = registry_view(registry, tmp_path)
    (note,) = view["notes"]
    assert "v1: its registration did not finish" in note and "holds no alias" in note
    assert "`dvc repro register` finishes it" in note
    assert view["versions"][0]["gate"].startswith("unfinished")
    main(["history", "--model-name", NAME, "--tracking-uri", tracking["uri"]])
    out = capsys.readouterr().out
    assert f"NOTE: {note}" in out, out

    report = register_execution(runs, NAME, 0.05)  # the re-run finishes the same version
    assert report["version"] == "1" and registry.aliases() == {CHAMPION: "1", CHALLENGER: "1"}
    assert registry_view(registry, tmp_path)["notes"] == []
    assert registry.version("1").tags["registration"] == "complete"
