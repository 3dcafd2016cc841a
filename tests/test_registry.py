"""The registry and its promotion gate, on a real MLflow registry (a tmp SQLite store).

Each "execution" is what the track stage leaves behind: a parent run, one child run per
strategy with metrics, tags, ``eval/predictions.csv`` and a real pyfunc model (a tiny
random-init timm network), and the ``mlflow_runs.json`` record that points at them.
Everything that needs such a store stays here, sharing these fixtures: the registry wrapper,
the promotion, the register recipe and the store check. The pure statistics are tested in
test_gate.py, the model card in test_model_card.py.
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

from petsml.data.breeds import BREEDS
from petsml.errors import PetsError
from petsml.tracking.errors import RegistryError
from petsml.tracking.gate import mcnemar
from petsml.tracking.model_registry import (
    CHALLENGER,
    CHAMPION,
    PREVIOUS_CHAMPION_TAG,
    ModelRegistry,
)
from petsml.tracking.registration import VERSION_SCORE_KEYS, register_execution
from tests.models import BACKBONE
from tests.predictions import N_TEST, masks, predictions_table
from tests.tracking import execution

pytestmark = [pytest.mark.slow(seconds=55), pytest.mark.integration]

REPO = Path(__file__).resolve().parents[1]
NAME = "oxford-pets-breed"


# --------------------------------------------------------------------------- version tags


def test_version_scores_are_the_metrics_json_scores_without_the_training_time():
    """A version is tagged with the model's scores: every metrics.json key but train_seconds
    (a cost of training, not a quality of the model), in the card's table order."""
    from petsml.evaluation.evaluate import METRIC_KEYS

    assert VERSION_SCORE_KEYS == tuple(k for k in METRIC_KEYS if k != "train_seconds")


# --------------------------------------------------------------------------- real registry


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


def _one(tracking, model_pt, correct: np.ndarray, key: str, val: float = 0.8) -> dict:
    return execution(tracking, model_pt, {"finetune_top": (val, predictions_table(correct))}, key)


def test_first_version_becomes_champion_with_tags_card_and_history(tracking, model_pt, monkeypatch):
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    champ, _ = masks(30, 5, 5)
    runs = execution(
        tracking,
        model_pt,
        {
            # higher validation accuracy, lower test accuracy: val decides
            "feature_extractor": (0.90, predictions_table(masks(20, 0, 0)[0])),
            "svm_early": (0.70, predictions_table(champ)),
        },
        key="first",
    )
    report = register_execution(runs, NAME, 0.05)
    # registering must not pin later code or child processes to this store
    assert "MLFLOW_REGISTRY_URI" not in os.environ
    assert report["model_name"] == NAME and report["version"] == "1"
    assert report["strategy"] == "feature_extractor"
    assert report["decision"] == "champion" and report["p_value"] is None
    assert report["aliases"] == [CHALLENGER, CHAMPION]

    registry = ModelRegistry(NAME)
    version = registry.champion()
    assert str(version.version) == "1"
    tags = version.tags
    assert tags["strategy"] == "feature_extractor" and tags["backbone"] == BACKBONE
    assert tags["git_commit"] == "c0ffeefirst" and tags["dvc_data_hash"] == "d4t4first"
    assert float(tags["val_accuracy"]) == pytest.approx(0.90)
    assert float(tags["test_accuracy"]) == pytest.approx(20 / 60)
    assert tags["run_id"] == runs["children"]["feature_extractor"]
    assert version.description.startswith(f"# Model card: {NAME} version 1")
    card = version.description
    assert "| svm_early |" in card  # every strategy in the metrics table
    assert "| **feature_extractor** (registered) | 0.9000 | 0.3333 |" in card
    assert "| test | 60 |" in card  # split size from the run's dataset input
    # weak spots from the run's eval/per_class.csv: feature_extractor gets images 0..19 right
    # only, so labels 20..36 (no image below 20) score 0 and label 0 scores 0.5
    weak = card.split("## Weak spots")[1].split("## Intended use")[0]
    assert "The 5 classes with the lowest test scores" in weak
    assert f"| {BREEDS[20]} | 0.0000 |" in weak and BREEDS[0] not in weak
    card_path = registry.client.download_artifacts(tags["run_id"], "model_card.md")
    assert Path(card_path).read_text() == version.description
    assert tags["model_card"] == f"runs:/{tags['run_id']}/model_card.md"

    moves = [(e.alias, e.version, e.previous, e.action) for e in registry.history()]
    assert moves == [(CHALLENGER, "1", None, "register"), (CHAMPION, "1", None, "gate")]


def test_registering_the_same_runs_again_changes_nothing(tracking, model_pt):
    runs = _one(tracking, model_pt, masks(30, 5, 5)[0], "same")
    first = register_execution(runs, NAME, 0.05)
    again = register_execution(runs, NAME, 0.05)
    registry = ModelRegistry(NAME)
    assert len(registry.versions()) == 1
    assert again["version"] == first["version"] == "1"
    assert again["decision"] == "already_registered"
    assert again["aliases"] == [CHALLENGER, CHAMPION]
    assert len(registry.history()) == 2  # no new alias moves


def test_a_version_left_without_gate_by_an_interrupted_run_is_finished_not_duplicated(
    tracking, model_pt
):
    register_execution(_one(tracking, model_pt, masks(25, 2, 20)[0], "a"), NAME, 0.05)
    runs = _one(tracking, model_pt, masks(25, 2, 20)[1], "b")
    registry = ModelRegistry(NAME)
    # the crash: registered, but no alias and no gate decision yet
    registry.register(runs["model_uris"]["finetune_top"], runs["children"]["finetune_top"])
    report = register_execution(runs, NAME, 0.05)
    assert report["version"] == "2" and report["decision"] == "promoted"
    assert len(registry.versions()) == 2
    assert registry.aliases() == {CHAMPION: "2", CHALLENGER: "2"}


def test_worse_challenger_stays_challenger(tracking, model_pt):
    champ, chall = masks(30, 20, 2)
    register_execution(_one(tracking, model_pt, champ, "a"), NAME, 0.05)
    report = register_execution(_one(tracking, model_pt, chall, "b", val=0.95), NAME, 0.05)
    assert report["version"] == "2" and report["decision"] == "rejected"
    assert report["aliases"] == [CHALLENGER] and report["champion"] == "1"
    assert report["reason"].startswith("v2 vs champion v1: not better")
    registry = ModelRegistry(NAME)
    assert registry.aliases() == {CHAMPION: "1", CHALLENGER: "2"}
    assert registry.version(2).tags["gate.decision"] == "rejected"


def test_significantly_better_challenger_takes_over_and_rollback_restores(tracking, model_pt):
    champ, chall = masks(25, 2, 20)  # 20 discordant pairs for, 2 against: p ~ 1e-4
    register_execution(_one(tracking, model_pt, champ, "a"), NAME, 0.05)
    report = register_execution(_one(tracking, model_pt, chall, "b"), NAME, 0.05)
    assert report["decision"] == "promoted" and report["p_value"] < 0.001
    assert report["aliases"] == [CHALLENGER, CHAMPION]
    assert report["comparison"]["challenger_only"] == 20
    registry = ModelRegistry(NAME)
    assert str(registry.champion().version) == "2"
    assert registry.version(2).tags[PREVIOUS_CHAMPION_TAG] == "1"

    event = registry.rollback("v2 misbehaves on phone photos")
    assert (event.version, event.previous, event.action) == ("1", "2", "rollback")
    assert str(registry.champion().version) == "1"
    assert registry.aliases()[CHALLENGER] == "2"
    last = registry.history()[-1]
    assert (last.alias, last.version, last.reason) == (
        CHAMPION, "1", "v2 misbehaves on phone photos",
    )  # fmt: skip
    with pytest.raises(RegistryError, match="nothing to roll back"):
        registry.rollback()  # v1 replaced no earlier champion


def test_better_but_not_significant_challenger_does_not_take_over(tracking, model_pt):
    champ, chall = masks(30, 3, 6)  # more right, but p ~ 0.51
    register_execution(_one(tracking, model_pt, champ, "a"), NAME, 0.05)
    report = register_execution(_one(tracking, model_pt, chall, "b"), NAME, 0.05)
    assert report["decision"] == "rejected"
    assert report["p_value"] == pytest.approx(mcnemar(3, 6).p_value)
    assert "not significant" in report["reason"]
    assert ModelRegistry(NAME).aliases() == {CHAMPION: "1", CHALLENGER: "2"}


def test_challenger_scored_on_another_test_set_is_not_promoted(tracking, model_pt):
    champ, chall = masks(10, 0, 40)
    register_execution(_one(tracking, model_pt, champ, "a"), NAME, 0.05)
    other = predictions_table(chall, [f"other_{i}" for i in range(N_TEST)])
    runs = execution(tracking, model_pt, {"finetune_top": (0.9, other)}, "b")
    report = register_execution(runs, NAME, 0.05)
    assert report["decision"] == "rejected" and report["p_value"] is None
    assert "test sets differ" in report["reason"]
    assert str(ModelRegistry(NAME).champion().version) == "1"


def test_manual_promote_and_history_through_the_cli(tracking, model_pt, capsys):
    from petsml.cli import main

    champ, chall = masks(30, 20, 2)
    register_execution(_one(tracking, model_pt, champ, "a"), NAME, 0.05)
    register_execution(_one(tracking, model_pt, chall, "b"), NAME, 0.05)
    main(["promote", "2", "--reason", "hand-checked on new photos", "--model-name", NAME])
    assert "champion -> v2 (was v1)" in capsys.readouterr().out
    registry = ModelRegistry(NAME)
    assert str(registry.champion().version) == "2"
    v2 = registry.version(2)
    assert v2.tags[PREVIOUS_CHAMPION_TAG] == "1"
    recorded = [json.loads(v) for k, v in v2.tags.items() if k.startswith("alias_event.")]
    promote = [e for e in recorded if e["action"] == "promote"]
    assert len(promote) == 1 and promote[0]["reason"] == "hand-checked on new photos"
    assert promote[0]["alias"] == CHAMPION and promote[0]["previous"] == "1"

    main(["history", "--model-name", NAME])
    out = capsys.readouterr().out
    assert "hand-checked on new photos" in out and "@champion = v2" in out
    main(["history", "--json", "--model-name", NAME])
    moves = [json.loads(line) for line in capsys.readouterr().out.splitlines()]  # JSON Lines
    assert [m["action"] for m in moves] == ["register", "gate", "register", "promote"]

    main(["rollback", "--model-name", NAME])
    assert str(registry.champion().version) == "1"
    assert "rollback from version 2" in capsys.readouterr().out

    # an alias names the version as a number does (as `pets export` takes them)
    registry.client.set_registered_model_alias(NAME, "candidate", "2")
    main(["promote", "candidate", "--reason", "by its alias", "--json", "--model-name", NAME])
    (line,) = capsys.readouterr().out.splitlines()  # --json: exactly one object
    moved = json.loads(line)
    assert str(moved["version"]) == "2" and moved["alias"] == CHAMPION
    assert str(moved["previous"]) == "1" and moved["reason"] == "by its alias"
    assert str(registry.champion().version) == "2"
    with pytest.raises(SystemExit) as done:
        main(["promote", "nosuch", "--reason", "x", "--json", "--model-name", NAME])
    out, err = capsys.readouterr()
    assert done.value.code == 1 and out == ""
    assert err.startswith("ERROR: ") and "no version or alias 'nosuch'" in err


def test_cli_errors_are_clear(tracking, model_pt, tmp_path, capsys):
    from petsml.cli import main

    for argv in (["rollback"], ["predict", str(REPO / "params.yaml")], ["promote", "1"]):
        with pytest.raises(SystemExit) as exit_info:
            main([*argv, "--model-name", NAME, "--reason", "x"] if argv[0] == "promote"
                 else [*argv, "--model-name", NAME])  # fmt: skip
        assert exit_info.value.code == 1
    missing = tmp_path / "elsewhere" / "mlflow.db"
    with pytest.raises(SystemExit):
        main(["history", "--tracking-uri", f"sqlite:///{missing}", "--model-name", NAME])
    assert not missing.exists()  # reading never creates an empty store
    err = capsys.readouterr().err
    assert f"{NAME} has no 'champion' alias" in err and "has no version 1" in err
    assert f"no MLflow database at {missing}" in err
    registry = ModelRegistry(NAME)
    with pytest.raises(PetsError, match="no 'champion' alias"):
        registry.champion()

    register_execution(_one(tracking, model_pt, masks(30, 5, 5)[0], "a"), NAME, 0.05)
    with pytest.raises(RegistryError, match="already the champion"):
        registry.promote(1, "again")
    with pytest.raises(RegistryError, match="not a model version"):
        registry.promote("latest", "no")


def test_cli_predict_loads_the_champion_and_prints_breeds(tracking, model_pt, tmp_path, capsys):
    from petsml.cli import main
    from petsml.testing.fakedata import class_image

    register_execution(_one(tracking, model_pt, masks(30, 5, 5)[0], "a"), NAME, 0.05)
    images = []
    for index in range(2):
        path = tmp_path / f"pet{index}.jpg"
        class_image(index, np.random.default_rng(index), (64, 48)).save(path, format="JPEG")
        images.append(str(path))
    main(["predict", *images, "--json", "--model-name", NAME])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert [r["file"] for r in rows] == images
    for row in rows:
        assert row["label"] in BREEDS and row["error"] is None
        assert 0.0 < row["probability"] <= 1.0
        assert len(row["top5"]) == 5 and row["top5"][0]["label"] == row["label"]
    main(["predict", images[0], "--model-name", NAME])
    out = capsys.readouterr().out
    assert f"models:/{NAME}@champion (version 1)" in out and rows[0]["label"] in out


def test_register_stage_writes_the_report(tracking, model_pt, tmp_path, monkeypatch, capsys):
    from petsml.stage import run_stage
    from stages import register as stage

    champ, _ = masks(30, 5, 5)
    runs = _one(tracking, model_pt, champ, "stage")
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
    weak = _one(tracking, model_pt, index < 20, "weak")
    better = _one(tracking, model_pt, index < 35, "better")  # beats weak (15 for, 0 against)
    best = _one(tracking, model_pt, index < 55, "best")  # beats better (20 for, 0 against)
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
    runs = _one(tracking, model_pt, masks(30, 5, 5)[0], "fp")
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
    runs = _one(tracking, model_pt, masks(30, 5, 5)[0], "read")
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

    runs = _one(tracking, model_pt, masks(25, 2, 20)[0], "killed")
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
