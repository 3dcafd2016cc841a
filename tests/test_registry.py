"""The registry and its promotion gate, on a real MLflow registry (a tmp SQLite store).

Each "execution" is what the track stage leaves behind: a parent run, one child run per
strategy with metrics, tags, ``eval/predictions.csv`` and a real pyfunc model (a tiny
random-init timm network), and the ``mlflow_runs.json`` record that points at them.
Here: the registry wrapper, the promotion and the CLI over them; the register stage and the
store check are in test_registry_store.py (the fixtures of both: tests/registry_data.py). The
pure statistics are tested in test_gate.py, the model card in test_model_card.py.
"""

from __future__ import annotations

import json
import os
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


# --------------------------------------------------------------------------- real registry
# fixtures: tests/registry_data.py


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
    runs = one(tracking, model_pt, masks(30, 5, 5)[0], "same")
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
    register_execution(one(tracking, model_pt, masks(25, 2, 20)[0], "a"), NAME, 0.05)
    runs = one(tracking, model_pt, masks(25, 2, 20)[1], "b")
    registry = ModelRegistry(NAME)
    # the crash: registered, but no alias and no gate decision yet
    registry.register(runs["model_uris"]["finetune_top"], runs["children"]["finetune_top"])
    report = register_execution(runs, NAME, 0.05)
    assert report["version"] == "2" and report["decision"] == "promoted"
    assert len(registry.versions()) == 2
    assert registry.aliases() == {CHAMPION: "2", CHALLENGER: "2"}


def test_worse_challenger_stays_challenger(tracking, model_pt):
    champ, chall = masks(30, 20, 2)
    register_execution(one(tracking, model_pt, champ, "a"), NAME, 0.05)
    report = register_execution(one(tracking, model_pt, chall, "b", val=0.95), NAME, 0.05)
    assert report["version"] == "2" and report["decision"] == "rejected"
    assert report["aliases"] == [CHALLENGER] and report["champion"] == "1"
    assert report["reason"].startswith("v2 vs champion v1: not better")
    registry = ModelRegistry(NAME)
    assert registry.aliases() == {CHAMPION: "1", CHALLENGER: "2"}
    assert registry.version(2).tags["gate.decision"] == "rejected"


def test_significantly_better_challenger_takes_over_and_rollback_restores(tracking, model_pt):
    champ, chall = masks(25, 2, 20)  # 20 discordant pairs for, 2 against: p ~ 1e-4
    register_execution(one(tracking, model_pt, champ, "a"), NAME, 0.05)
    report = register_execution(one(tracking, model_pt, chall, "b"), NAME, 0.05)
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
    register_execution(one(tracking, model_pt, champ, "a"), NAME, 0.05)
    report = register_execution(one(tracking, model_pt, chall, "b"), NAME, 0.05)
    assert report["decision"] == "rejected"
    assert report["p_value"] == pytest.approx(mcnemar(3, 6).p_value)
    assert "not significant" in report["reason"]
    assert ModelRegistry(NAME).aliases() == {CHAMPION: "1", CHALLENGER: "2"}


def test_challenger_scored_on_another_test_set_is_not_promoted(tracking, model_pt):
    champ, chall = masks(10, 0, 40)
    register_execution(one(tracking, model_pt, champ, "a"), NAME, 0.05)
    other = predictions_table(chall, [f"other_{i}" for i in range(N_TEST)])
    runs = execution(tracking, model_pt, {"finetune_top": (0.9, other)}, "b")
    report = register_execution(runs, NAME, 0.05)
    assert report["decision"] == "rejected" and report["p_value"] is None
    assert "test sets differ" in report["reason"]
    assert str(ModelRegistry(NAME).champion().version) == "1"


def test_manual_promote_and_history_through_the_cli(tracking, model_pt, capsys):
    from petsml.cli import main

    champ, chall = masks(30, 20, 2)
    register_execution(one(tracking, model_pt, champ, "a"), NAME, 0.05)
    register_execution(one(tracking, model_pt, chall, "b"), NAME, 0.05)
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

    register_execution(one(tracking, model_pt, masks(30, 5, 5)[0], "a"), NAME, 0.05)
    with pytest.raises(RegistryError, match="already the champion"):
        registry.promote(1, "again")
    with pytest.raises(RegistryError, match="not a model version"):
        registry.promote("latest", "no")


def test_cli_predict_loads_the_champion_and_prints_breeds(tracking, model_pt, tmp_path, capsys):
    from petsml.cli import main
    from petsml.testing.fakedata import class_image

    register_execution(one(tracking, model_pt, masks(30, 5, 5)[0], "a"), NAME, 0.05)
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
