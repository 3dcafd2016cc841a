"""The evaluate stage on a tiny project: the offline Lite0 at 32 px, fake pets, 40 px images.

The frozen strategies' models are the featurize stage's (pretrained) backbone plus a head, so
their test logits come from the cached test pass; the fine-tuned one runs its own model."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from sklearn.metrics import f1_score

from petsml import paths
from petsml.data import passes
from petsml.data.breeds import labels_for
from petsml.data.decode import DecodedImages
from petsml.data.feature_file import read_features
from petsml.data.split import load_split
from petsml.evaluation import evaluate
from petsml.evaluation.inference import model_logits
from petsml.models.classifier import load_classifier, save_classifier
from tests.evaluate_data import (
    CPU,
    FROZEN,
    STRATEGIES,
    copy_data,
    eval_params,
    predictions,
)

pytestmark = pytest.mark.integration


def test_metrics_json_agrees_with_predictions(project):
    root, _, scores = project
    saved = json.loads((root / paths.METRICS).read_text())
    assert saved == scores
    assert sorted(saved) == sorted(STRATEGIES)
    test = pd.read_csv(root / paths.split_csv("test"))
    for strategy, entry in saved.items():
        assert set(entry) == set(evaluate.METRIC_KEYS)
        preds = predictions(root, strategy)
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
    assert not predictions(root, "finetune_top")["correct"].all()


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
    work = copy_data(root, tmp_path)
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
        preds = predictions(root, strategy)
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
        preds = predictions(root, strategy)
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


def test_stage_entry_point(project, tmp_path, monkeypatch):
    """`python -m stages.evaluate` is a thin recipe: params.yaml in the cwd drives it."""
    from stages import evaluate as stage

    root, _, scores = project
    work = copy_data(root, tmp_path)
    shutil.copytree(root / paths.MODELS, work / paths.MODELS)
    set_strategies = eval_params(**{"train.strategies": ["svm_early"]})
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
