"""The evaluate stage's files under DVC (plots, metrics show/diff), other tasks, refusals; the
tiny project of test_evaluate.py (tests/evaluate_data.py).

The frozen strategies' models are the featurize stage's (pretrained) backbone plus a head, so
their test logits come from the cached test pass; the fine-tuned one runs its own model."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from petsml import paths
from petsml.config import parse_params
from petsml.data.feature_file import read_features
from petsml.data.split import load_split
from petsml.evaluation import evaluate
from petsml.evaluation.inference import EvaluationError
from petsml.io import write_json
from petsml.testing.project import tool_env
from tests.evaluate_data import (
    CPU,
    REPO,
    STRATEGIES,
    copy_data,
    eval_params,
    make_models,
    predictions,
)

pytestmark = pytest.mark.integration


COMPARE_PLOTS = ("accuracy_vs_latency", "accuracy_vs_training_time")  # test_compare.py's


def test_dvc_plots_show_accepts_the_plots_config(project, tmp_path):
    """The `plots:` section of the real dvc.yaml renders the files the stage wrote."""
    root, _, scores = project
    work = tmp_path / "repo"
    shutil.copytree(root / evaluate.PLOTS_DIR, work / evaluate.PLOTS_DIR)
    shutil.copy(REPO / "dvc.yaml", work / "dvc.yaml")
    shutil.copy(root / "params.yaml", work / "params.yaml")
    env = tool_env()
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"]):
        subprocess.run(cmd, cwd=work, env=env, check=True, capture_output=True, timeout=60)
    shown = subprocess.run(
        ["dvc", "plots", "show", "--json"], cwd=work, env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr[-3000:]
    out = json.loads(shown.stdout)
    # the advise and compare stages' plots are their own; this project never ran them
    others = ("reports/advice", "reports/comparison")
    errors = [e for e in out.get("errors") or [] if not any(o in json.dumps(e) for o in others)]
    assert not errors, errors
    data = {k: v for k, v in out["data"].items() if k not in COMPARE_PLOTS}
    expected = [
        "strategies_val",
        "strategies_test",
        *(f"reports/plots/confusion/{s}.csv" for s in STRATEGIES),
        *(f"reports/plots/reliability/{s}.csv" for s in STRATEGIES),
        "reports/plots/history/accuracy/finetune_top.csv",
        "reports/plots/history/loss/finetune_top.csv",
        "reports/plots/search/feature_extractor.csv",
        "reports/plots/search/svm_early.csv",
    ]
    assert sorted(k for k in data if not k.startswith("reports/advice/")) == sorted(expected)
    for plot_id in expected:
        assert data[plot_id], f"{plot_id} not rendered"
    confusion = data["reports/plots/confusion/finetune_top.csv"][0]["content"]
    assert len(confusion["data"]["values"]) == 12
    assert "actual" in json.dumps(confusion["spec"]["encoding"]["y"])
    for plot_id, field in (
        (f"strategies_{split}", f"{split}_accuracy") for split in ("val", "test")
    ):
        bars = data[plot_id][0]["content"]
        assert bars["encoding"]["y"]["field"] == "strategy"
        assert bars["encoding"]["x"]["field"] == field
        shown = {row["strategy"]: float(row[field]) for row in bars["data"]["values"]}
        assert shown == pytest.approx({s: scores[s][field] for s in STRATEGIES})
    curves = data["reports/plots/history/accuracy/finetune_top.csv"][0]["content"]
    fields = {v["field"] for v in curves["data"]["values"]}
    assert fields == {"train_accuracy", "val_accuracy"}


def _dvc(work: Path, *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run(
        ["dvc", *args], cwd=work, env=tool_env(), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"dvc {' '.join(args)}: {done.stderr[-3000:]}"
    return done


def test_dvc_metrics_show_and_diff_print_one_row_per_strategy(project, tmp_path):
    """`dvc metrics show` / `diff` on the real dvc.yaml: a table of strategies, not one wide row."""
    root, _, scores = project
    work = tmp_path / "repo"
    shutil.copytree(root / evaluate.STRATEGY_METRICS_DIR, work / evaluate.STRATEGY_METRICS_DIR)
    shutil.copy(root / paths.METRICS, work / paths.METRICS)
    shutil.copy(REPO / "dvc.yaml", work / "dvc.yaml")
    shutil.copy(root / "params.yaml", work / "params.yaml")
    env = tool_env()
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"]):
        subprocess.run(cmd, cwd=work, env=env, check=True, capture_output=True, timeout=60)
    # the combined file stays for the tools that read it; the metrics files are per strategy
    assert json.loads((work / paths.METRICS).read_text()) == scores
    shown = json.loads(_dvc(work, "metrics", "show", "--json").stdout)
    files = shown[""]["data"]
    # the data_issues counts are dvc.yaml's other metrics file; this project has not run it
    assert not files.pop(str(paths.DATA_ISSUES_COUNTS)).get("data")
    assert {Path(f).stem for f in files} == set(STRATEGIES)
    for name, entry in files.items():
        assert entry["data"] == pytest.approx(scores[Path(name).stem])
    table = _dvc(work, "metrics", "show").stdout.splitlines()
    header = table[0].split()
    assert header[0] == "Path" and set(header[1:]) == set(evaluate.METRIC_KEYS)
    rows = {line.split()[0]: line.split()[1:] for line in table[1:] if line.strip()}
    rows.pop(str(paths.DATA_ISSUES_COUNTS), None)
    assert set(rows) == {f"reports/metrics/{s}.json" for s in STRATEGIES}
    column = header.index("test_accuracy") - 1
    for strategy in STRATEGIES:
        shown_value = float(rows[f"reports/metrics/{strategy}.json"][column])
        assert shown_value == pytest.approx(scores[strategy]["test_accuracy"], abs=1e-3)

    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    for cmd in (["add", "-A"], ["commit", "-qm", "evaluated"]):
        subprocess.run(git + cmd, cwd=work, env=env, check=True, capture_output=True, timeout=60)
    changed = dict(scores["svm_early"], test_accuracy=0.999)
    write_json(work / evaluate.STRATEGY_METRICS_DIR / "svm_early.json", changed)
    diff = _dvc(work, "metrics", "diff").stdout.splitlines()
    assert diff[0].split()[:4] == ["Path", "Metric", "HEAD", "workspace"]
    assert [line.split()[:2] for line in diff[1:] if line.strip()] == [
        ["reports/metrics/svm_early.json", "test_accuracy"]
    ]


def test_species_task_two_classes(project, tmp_path):
    root = copy_data(project[0], tmp_path)
    make_models(root, "species", ["feature_extractor"])
    overrides = {"data.task": "species", "train.strategies": ["feature_extractor"]}
    params = parse_params(eval_params(**overrides))
    scores = evaluate.evaluate_all(params, root=root, device=CPU)
    assert scores["feature_extractor"]["test_top5"] == 1.0  # top-5 of 2 classes is everything
    preds = predictions(root, "feature_extractor")
    assert set(preds["label_name"]) == {"cat", "dog"}
    assert all(len(top.split()) == 2 for top in preds["top5"])
    assert len(pd.read_csv(root / evaluate.EVAL_DIR / "feature_extractor" / "per_class.csv")) == 2


def test_a_missing_model_or_stale_features_are_refused_naming_the_stage(project):
    root, params, _ = project
    test = load_split(root / paths.split_csv("test"), "breed")
    with pytest.raises(EvaluationError, match=r"train@finetune_full"):
        evaluate.evaluate_strategy("finetune_full", params, test, root=root, device=CPU)
    stale = read_features(root / paths.FEATURES, "test")
    stale.image_id, stale.penultimate = stale.image_id[:-1], stale.penultimate[:-1]
    with pytest.raises(EvaluationError, match="dvc repro featurize"):
        evaluate.evaluate_strategy(
            "feature_extractor", params, test, root=root, features=stale, device=CPU
        )
    other_task = parse_params(eval_params(**{"data.task": "species"}))
    species_test = load_split(root / paths.split_csv("test"), "species")
    with pytest.raises(EvaluationError, match=r"data.task"):
        evaluate.evaluate_strategy("finetune_top", other_task, species_test, root=root)
