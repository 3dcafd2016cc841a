"""The evaluate stage on a tiny project: the offline Lite0 at 32 px, fake pets, 40 px images.

The frozen strategies' models are the featurize stage's (pretrained) backbone plus a head, so
their test logits come from the cached test pass; the fine-tuned one runs its own model."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score

from petsml import paths
from petsml.config import parse_params
from petsml.data import passes
from petsml.data.breeds import labels_for
from petsml.data.decode import DecodedImages, decode_images
from petsml.data.feature_file import read_features
from petsml.data.split import load_split
from petsml.evaluation import evaluate
from petsml.evaluation.inference import EvaluationError, model_logits
from petsml.io import write_json
from petsml.models.backbones import create_backbone
from petsml.models.classifier import Classifier, load_classifier, save_classifier
from petsml.models.model_dir import ModelMeta, Summary, write_model_dir
from petsml.testing.fakedata import make_dataset, split_rows
from petsml.testing.project import apply_overrides, tool_env
from petsml.training.features import featurize_splits

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
BACKBONE = "efficientnet_lite0"  # pretrained offline weights: featurize's exact backbone
STRATEGIES = ["feature_extractor", "svm_early", "finetune_top"]
FROZEN = ("feature_extractor", "svm_early")
CPU = torch.device("cpu")


def _params(**overrides) -> dict:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    settings = {
        "model.backbone": BACKBONE,
        "model.image_size": 32,
        "model.early_block": -3,
        "decode.size": 40,
        "train.device": "cpu",
        "train.strategies": STRATEGIES,
        "features.batch_size": 5,  # several batches over 12 test images
        "evaluate.calibration_bins": 10,
    } | overrides
    return apply_overrides(raw, settings)


def _backbone(pretrained: bool = True):
    return create_backbone(BACKBONE, pretrained=pretrained, early_block=-3, image_size=32)


def _save_model(root: Path, strategy: str, model: Classifier, task: str, epochs=(), search=()):
    meta = ModelMeta(
        strategy=strategy,
        task=task,
        class_names=list(labels_for(task)),
        decode_size=40,
        backbone=BACKBONE,
        frozen_backbone=strategy in FROZEN,
    )
    summary = Summary(
        strategy=strategy, task=task, backbone=BACKBONE, val_accuracy=0.625, train_seconds=1.5,
        best_epoch=None, epochs_run=len(epochs), device="cpu", params={},
    )  # fmt: skip
    write_model_dir(root / paths.model_dir(strategy), model, meta, summary=summary,
                    epochs=list(epochs), search=list(search))  # fmt: skip


def _fit_head(backbone, features, labels, n_classes, feature):
    """A linear head fitted on the (random-init) features: better than chance, not perfect."""
    fit = LogisticRegression(C=0.05, max_iter=500).fit(features, labels)
    weight = np.zeros((n_classes, features.shape[1]))
    bias = np.full(n_classes, -20.0)  # classes absent from the fake data are never predicted
    if len(fit.classes_) == 2:  # sklearn's binary case has one row for the positive class
        weight[fit.classes_[1]], bias[fit.classes_[1]] = fit.coef_[0], fit.intercept_[0]
        bias[fit.classes_[0]] = 0.0
    else:
        weight[fit.classes_], bias[fit.classes_] = fit.coef_, fit.intercept_
    return Classifier.from_linear(backbone, weight, bias, feature=feature)


def _make_data(root: Path) -> None:
    """Split CSVs (4 breeds, 20 train+val, 12 test images), decoded cache, cached features."""
    ds = make_dataset(root / "src", per_breed=8, test_per_breed=3, size=(48, 44), quirks=False)
    frame = pd.DataFrame(split_rows(ds))
    test_ids = set(ds.test)
    splits = {
        "train": frame[~frame.image_id.isin(test_ids)],
        "val": frame[~frame.image_id.isin(test_ids)].iloc[::4],
        "test": frame[frame.image_id.isin(test_ids)],
    }
    (root / paths.SPLITS).mkdir(parents=True)
    for name, split in splits.items():
        split.to_csv(root / paths.split_csv(name), index=False)
    decode_images(frame, root / "src", root / paths.DECODED, size=40, workers=1)
    decoded = DecodedImages.open(root / paths.DECODED)
    split_ids = {name: split["image_id"].tolist() for name, split in splits.items()}
    featurize_splits(_backbone(), decoded, split_ids, root / paths.FEATURES, 8, CPU, "fp32")


def _make_models(root: Path, task: str, strategies: list[str]) -> None:
    """models/<strategy>/ by hand; params.yaml naming the task and strategies."""
    backbone = _backbone()  # the same weights the features came from
    feats = read_features(root / paths.FEATURES, "train")
    train = load_split(root / paths.split_csv("train"), task)
    assert feats.image_id.tolist() == train["image_id"].tolist()
    n_classes = len(labels_for(task))
    for strategy in strategies:
        if strategy in FROZEN:
            kind = "penultimate" if strategy == "feature_extractor" else "early"
            x = feats.penultimate if kind == "penultimate" else feats.block(backbone.early_index)
            model = _fit_head(backbone, x, train["label"], n_classes, kind)
            search = [{"C": 1.0, "val_accuracy": 0.625}, {"C": 0.01, "val_accuracy": 0.5}]
            _save_model(root, strategy, model, task, search=search)
        else:
            torch.manual_seed(1)
            model = Classifier(_backbone(pretrained=False), n_classes)  # random: mostly wrong
            epochs = [
                {"epoch": e, "train_loss": 3.0 / e, "train_accuracy": 0.2 * e,
                 "val_loss": 3.2 / e, "val_accuracy": 0.15 * e, "lr": 1e-3, "seconds": 0.1}
                for e in (1, 2, 3)
            ]  # fmt: skip
            _save_model(root, strategy, model, task, epochs=epochs)
    (root / "params.yaml").write_text(
        yaml.safe_dump(_params(**{"data.task": task, "train.strategies": strategies}))
    )


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("evalproj")
    _make_data(root)
    _make_models(root, "breed", STRATEGIES)
    params = parse_params(_params())
    scores = evaluate.evaluate_all(params, root=root, device=CPU)
    return root, params, scores


def _predictions(root: Path, strategy: str) -> pd.DataFrame:
    return pd.read_csv(root / evaluate.EVAL_DIR / strategy / "predictions.csv")


def test_metrics_json_agrees_with_predictions(project):
    root, _, scores = project
    saved = json.loads((root / paths.METRICS).read_text())
    assert saved == scores
    assert sorted(saved) == sorted(STRATEGIES)
    test = pd.read_csv(root / paths.split_csv("test"))
    for strategy, entry in saved.items():
        assert set(entry) == set(evaluate.METRIC_KEYS)
        preds = _predictions(root, strategy)
        assert preds["image_id"].tolist() == test["image_id"].tolist()
        assert (preds["label"] == test["class_id"]).all()
        assert (preds["correct"] == (preds["label"] == preds["pred"])).all()
        assert entry["test_accuracy"] == pytest.approx(preds["correct"].mean())
        in_top5 = [
            str(label) in top.split() for label, top in zip(preds.label, preds.top5, strict=True)
        ]
        assert entry["test_top5"] == pytest.approx(np.mean(in_top5))
        assert entry["test_top5"] >= entry["test_accuracy"]
        assert entry["test_macro_f1"] == pytest.approx(
            f1_score(preds["label"], preds["pred"], average="macro")
        )
        # ECE recomputed from the saved confidences alone, 10 equal-width bins
        conf, correct = preds["prob"].to_numpy(), preds["correct"].to_numpy(float)
        bin_of = np.minimum((np.ceil(conf * 10) - 1).astype(int), 9)
        ece = sum(
            abs(correct[bin_of == b].mean() - conf[bin_of == b].mean()) * (bin_of == b).mean()
            for b in np.unique(bin_of)
        )
        assert entry["test_ece"] == pytest.approx(ece, abs=1e-5)
        assert entry["val_accuracy"] == 0.625 and entry["train_seconds"] == 1.5
        names = list(labels_for("breed"))
        assert (preds["label_name"] == [names[i] for i in preds["label"]]).all()
        assert (preds["pred_name"] == [names[i] for i in preds["pred"]]).all()


def test_both_outcomes_are_exercised(project):
    root, _, scores = project
    # a fitted head beats a random network; the random one leaves mistakes to draw
    assert scores["feature_extractor"]["test_accuracy"] > scores["finetune_top"]["test_accuracy"]
    assert not _predictions(root, "finetune_top")["correct"].all()


def test_frozen_logits_from_the_cached_pass_equal_the_shipped_models_forward(project):
    """What is evaluated is what ships: a frozen strategy's logits (its head on the cached
    float32 test pass) equal its saved model's own forward on the decoded test photos."""
    root, params, _ = project
    test = load_split(root / paths.split_csv("test"), "breed")
    decoded = DecodedImages.open(root / paths.DECODED)
    results = evaluate.evaluate_strategies(
        STRATEGIES, params, test, root=root, device=CPU,
        features=read_features(root / paths.FEATURES, "test"),
    )  # fmt: skip
    for result in results:
        frozen = result.strategy in FROZEN
        assert result.logits_from == ("cached features" if frozen else "model")
        path = root / paths.model_dir(result.strategy) / "model.pt"
        for fused in (True, False):  # the served (fused) form, and the file's own layers
            model, _ = load_classifier(path, fused=fused)
            alone = model_logits(model, decoded, test["image_id"].tolist(), 5, CPU)
            assert alone.shape == result.logits.shape == (len(test), 37)
            tolerance = 1e-5 if fused else 1e-4
            np.testing.assert_allclose(result.logits, alone, rtol=tolerance, atol=tolerance)
            assert (result.logits.argmax(1) == alone.argmax(1)).all()


def test_frozen_strategies_run_no_network_and_a_finetuned_one_runs_once(project, monkeypatch,
                                                                         tmp_path):  # fmt: skip
    root, params, _ = project
    test = load_split(root / paths.split_csv("test"), "breed")
    index_ids = [
        i
        for name in paths.INDEX_SPLITS
        for i in load_split(root / paths.split_csv(name), "breed")["image_id"]
    ]
    log = tmp_path / "passes.jsonl"
    monkeypatch.setenv(passes.ENV, str(log))
    features = read_features(root / paths.FEATURES, "test")
    evaluate.evaluate_strategies(["feature_extractor", "svm_early"], params, test, root=root,
                               features=features, index_ids=index_ids, device=CPU)  # fmt: skip
    assert not log.exists()  # no photo went through any network
    (result,) = evaluate.evaluate_strategies(
        ["finetune_top"], params, test, root=root, features=features, index_ids=index_ids,
        device=CPU,
    )  # fmt: skip
    seen = passes.read_log(log)
    assert {entry["network"] for entry in seen} == {"finetune_top"}
    assert sorted(entry["images"] for entry in seen) == sorted([len(test), len(index_ids)])
    ids, vectors = result.index  # its similar-photo index rows, from that same pass
    assert ids == index_ids and vectors.shape == (len(index_ids), 1280)


def test_a_frozen_model_with_test_time_views_runs_its_own_shared_pass(project, tmp_path):
    root, params, _ = project
    work = _copy_data(root, tmp_path)
    shutil.copytree(root / paths.MODELS, work / paths.MODELS)
    for strategy in FROZEN:  # the cache holds no mirrored photos: these must run the model
        path = work / paths.model_dir(strategy) / "model.pt"
        model, spec = load_classifier(path, fused=False)
        model.tta = "flip"
        save_classifier(model, path, {k: spec[k] for k in ("strategy", "task", "class_names",
                        "decode_size", "backbone", "frozen_backbone")})  # fmt: skip
    test = load_split(work / paths.split_csv("test"), "breed")
    results = evaluate.evaluate_strategies(
        list(FROZEN), params, test, root=work, device=CPU,
        features=read_features(work / paths.FEATURES, "test"),
    )  # fmt: skip
    assert [r.logits_from for r in results] == ["model", "model"]
    flipped, _ = load_classifier(work / paths.model_dir("svm_early") / "model.pt")
    decoded = DecodedImages.open(work / paths.DECODED)
    alone = model_logits(flipped, decoded, test["image_id"].tolist(), 5, CPU)
    np.testing.assert_allclose(results[1].logits, alone, rtol=1e-5, atol=1e-5)


def test_report_files(project):
    root, _, scores = project
    for strategy in STRATEGIES:
        out = root / evaluate.EVAL_DIR / strategy
        per_class = pd.read_csv(out / "per_class.csv")
        assert len(per_class) == 37 and per_class["support"].sum() == 12
        preds = _predictions(root, strategy)
        acc = per_class.set_index("class_name")["accuracy"].dropna()
        by_hand = preds.groupby("label_name")["correct"].mean()
        pd.testing.assert_series_equal(acc.sort_index(), by_hand.sort_index(), check_names=False)
        pairs = pd.read_csv(out / "confused_pairs.csv")
        wrong = preds[~preds["correct"]].groupby(["label_name", "pred_name"]).size()
        assert len(pairs) == min(10, len(wrong))
        for row in pairs.itertuples():
            assert wrong[(row.actual_name, row.predicted_name)] == row.count
        assert pairs["count"].is_monotonic_decreasing
        details = json.loads((out / "metrics.json").read_text())
        assert details["test_accuracy"] == scores[strategy]["test_accuracy"]
        assert details["n_test"] == 12 and details["n_classes"] == 37
        assert details["logits_from"] == ("cached features" if strategy in FROZEN else "model")
        mistakes = not preds["correct"].all()
        for png in ("confusion.png", "misclassified.png", "reliability.png"):
            with Image.open(out / png) as img:
                assert img.format == "PNG"
                assert min(img.size) > 200 or (png == "misclassified.png" and not mistakes)
        with Image.open(out / "confusion.png") as img:
            assert min(img.size) > 1000  # 37 named rows and columns need room
    leftovers = [p.name for p in (root / paths.REPORTS).rglob(".*")]
    assert leftovers == []  # no temp files left behind by the atomic writes


def test_plot_data(project):
    root, _, scores = project
    plots = root / evaluate.PLOTS_DIR
    strategies = pd.read_csv(plots / "strategies.csv")
    assert strategies["strategy"].tolist() == STRATEGIES
    assert strategies["test_accuracy"].tolist() == pytest.approx(
        [scores[s]["test_accuracy"] for s in STRATEGIES]
    )
    for strategy in STRATEGIES:
        confusion = pd.read_csv(plots / "confusion" / f"{strategy}.csv")
        preds = _predictions(root, strategy)
        assert confusion["actual"].tolist() == preds["label_name"].tolist()
        assert confusion["predicted"].tolist() == preds["pred_name"].tolist()
        reliability = pd.read_csv(plots / "reliability" / f"{strategy}.csv")
        assert reliability["count"].sum() == len(preds)
    history = pd.read_csv(plots / "history" / "accuracy" / "finetune_top.csv")
    assert history["val_accuracy"].tolist() == pytest.approx([0.15, 0.3, 0.45])
    loss = pd.read_csv(plots / "history" / "loss" / "finetune_top.csv")
    assert loss.columns.tolist() == ["epoch", "train_loss", "val_loss"]
    assert not (plots / "history" / "accuracy" / "feature_extractor.csv").exists()
    search = pd.read_csv(plots / "search" / "feature_extractor.csv")
    assert search["log10_C"].tolist() == pytest.approx([-2.0, 0.0])  # sorted by C
    assert not (plots / "search" / "finetune_top.csv").exists()


def _copy_data(root: Path, dest: Path) -> Path:
    shutil.copytree(root / paths.DATA, dest / paths.DATA)
    return dest


def test_stage_entry_point(project, tmp_path, monkeypatch):
    """`python -m stages.evaluate` is a thin recipe: params.yaml in the cwd drives it."""
    from stages import evaluate as stage

    root, _, scores = project
    work = _copy_data(root, tmp_path)
    shutil.copytree(root / paths.MODELS, work / paths.MODELS)
    set_strategies = _params(**{"train.strategies": ["svm_early"]})
    (work / "params.yaml").write_text(yaml.safe_dump(set_strategies))
    monkeypatch.chdir(work)
    stage.main()
    saved = json.loads((work / paths.METRICS).read_text())
    assert saved == {"svm_early": scores["svm_early"]}
    assert sorted(p.name for p in (work / evaluate.EVAL_DIR).iterdir()) == [
        evaluate.COMPARISON_PNG,
        "svm_early",
    ]
    assert [p.name for p in (work / evaluate.STRATEGY_METRICS_DIR).iterdir()] == ["svm_early.json"]
    assert (work / evaluate.EVAL_DIR / "svm_early" / "misclassified.png").exists()


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
    root = _copy_data(project[0], tmp_path)
    _make_models(root, "species", ["feature_extractor"])
    overrides = {"data.task": "species", "train.strategies": ["feature_extractor"]}
    params = parse_params(_params(**overrides))
    scores = evaluate.evaluate_all(params, root=root, device=CPU)
    assert scores["feature_extractor"]["test_top5"] == 1.0  # top-5 of 2 classes is everything
    preds = _predictions(root, "feature_extractor")
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
    other_task = parse_params(_params(**{"data.task": "species"}))
    species_test = load_split(root / paths.split_csv("test"), "species")
    with pytest.raises(EvaluationError, match=r"data.task"):
        evaluate.evaluate_strategy("finetune_top", other_task, species_test, root=root)
