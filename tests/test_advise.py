"""The advise stage: the paired tests, the 2x2 decision both ways on generated features,
LogME, sampling, ``early_block: auto``, and the real stage under `dvc repro` in a tiny project
fed by a loopback mirror."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest, multivariate_normal

from petsml.advice.advise import AdviceError, advise, draw_sample
from petsml.advice.decision import (
    Probe,
    Similarity,
    decide,
    similarity_verdict,
)
from petsml.advice.logme import fit_column, log_evidence, logme
from petsml.advice.probe import nested_fractions, per_class_subset
from petsml.advice.stats import mcnemar_greater, paired_bootstrap_ci
from petsml.catalog import strategies as catalog
from petsml.config import ConfigError, load_params, parse_params
from petsml.data.feature_file import SplitFeatures
from petsml.io import write_json
from petsml.models.early_block import (
    EarlyBlockError,
    load_resolved,
    resolve_early_block,
    write_resolved,
)
from petsml.testing.fakedata import MirrorServer, make_dataset, pack_archives
from petsml.testing.project import REPO, dvc, fake_data_params, make_project, set_params

pytestmark = pytest.mark.slow(seconds=60)

# --------------------------------------------------------------------------------------- LogME


def _blobs(n_per_class: int, classes: int, dim: int, spread: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim)) * 3
    labels = np.repeat(np.arange(classes), n_per_class)
    return centres[labels] + spread * rng.normal(size=(labels.size, dim)), labels


def test_logme_scores_separable_features_above_noise():
    separable, labels = _blobs(30, 4, 16, spread=0.5)
    noise = np.random.default_rng(1).normal(size=separable.shape) * separable.std()
    assert logme(separable, labels) > logme(noise, labels) + 0.1
    blurred, _ = _blobs(30, 4, 16, spread=4.0)
    assert logme(separable, labels) > logme(blurred, labels) > logme(noise, labels)


@pytest.mark.parametrize(("n", "d"), [(40, 8), (12, 30)])  # more rows than features, and fewer
def test_logme_evidence_is_the_gaussian_marginal_likelihood(n, d):
    rng = np.random.default_rng(n)
    features, y = rng.normal(size=(n, d)), rng.normal(size=n)
    alpha, beta = 0.7, 2.5
    covariance = features @ features.T / alpha + np.eye(n) / beta
    expected = multivariate_normal(np.zeros(n), covariance).logpdf(y)
    assert log_evidence(features, y, alpha, beta) == pytest.approx(expected, rel=1e-9)


def test_logme_fixed_point_maximises_the_evidence():
    features, labels = _blobs(25, 3, 10, spread=1.0, seed=3)
    y = (labels == 1).astype(float)
    best, alpha, beta = fit_column(features, y)
    assert best == pytest.approx(log_evidence(features, y, alpha, beta))
    for a, b in (
        (alpha * 1.3, beta),
        (alpha / 1.3, beta),
        (alpha, beta * 1.3),
        (alpha, beta / 1.3),
    ):
        assert log_evidence(features, y, a, b) < best


# ------------------------------------------------------------------------------ the paired tests


def test_mcnemar_is_the_exact_one_sided_binomial_on_the_disagreements():
    a = np.array([1] * 9 + [0] * 2 + [1] * 30 + [0] * 5, dtype=bool)  # 9 wins, 2 losses
    b = np.array([0] * 9 + [1] * 2 + [1] * 30 + [0] * 5, dtype=bool)
    expected = binomtest(9, 11, 0.5, alternative="greater").pvalue
    assert mcnemar_greater(a, b) == pytest.approx(expected, rel=1e-12)
    assert mcnemar_greater(b, a) == pytest.approx(
        binomtest(2, 11, 0.5, alternative="greater").pvalue, rel=1e-12
    )
    assert mcnemar_greater(a, a) == 1.0  # no disagreement: no evidence either way


def test_paired_bootstrap_interval_covers_the_difference_and_shrinks_with_photos():
    rng = np.random.default_rng(0)
    small_a, small_b = rng.random(40) < 0.7, rng.random(40) < 0.6
    diff, low, high = paired_bootstrap_ci(small_a, small_b)
    assert diff == pytest.approx(small_a.mean() - small_b.mean())
    assert low <= diff <= high
    big_a, big_b = np.tile(small_a, 25), np.tile(small_b, 25)
    _, big_low, big_high = paired_bootstrap_ci(big_a, big_b)
    assert big_high - big_low < (high - low) / 3  # ~1/sqrt(25) as wide


# ------------------------------------------------------------------------------ the 2x2 table


def _probe(block: int, right: int, of: int = 100) -> Probe:
    return Probe(block, np.arange(of) < right)


@pytest.mark.parametrize(
    ("median", "verdict", "cell", "strategy"),
    [
        (40, "similar", "small+similar", "feature_extractor"),
        (40, "uncertain", "small+uncertain", "feature_extractor"),
        (40, "unlike", "small+unlike", "svm_early"),
        (500, "similar", "large+similar", "finetune_top"),
        (500, "uncertain", "large+uncertain", "finetune_top"),
        (500, "unlike", "large+unlike", "finetune_full"),
    ],
)
def test_each_cell_of_the_table_gives_its_strategy(median, verdict, cell, strategy):
    decision = decide(median, 100, Similarity(verdict, 3, 0.5, "because"))
    assert decision.cell == cell
    assert decision.strategy == strategy == catalog.for_cell(cell)
    assert decision.early_block == 3 and decision.why
    assert decide(99.5, 100, Similarity(verdict, 3, 0.5, "")).size == "small"
    assert decide(100, 100, Similarity(verdict, 3, 0.5, "")).size == "large"


def test_unlike_needs_a_significant_win_after_the_correction_for_blocks():
    pen = _probe(5, 60)
    # block 4 right on 80 of the same 100 photos (every photo pen gets right, and 20 more)
    strong = similarity_verdict(pen, [_probe(b, 20) for b in range(4)] + [_probe(4, 80)],
                                0.05, 0.1, 0.3)  # fmt: skip
    assert strong.verdict == "unlike" and strong.best_block == 4
    assert strong.p_value == pytest.approx(5 * mcnemar_greater(_probe(4, 80).correct, pen.correct))
    # 4 more photos: a lead, not evidence -> uncertain, and the similar column's strategy
    weak = similarity_verdict(pen, [_probe(3, 20), _probe(4, 64)], 0.05, 0.9, 0.3)
    assert (
        weak.verdict == "uncertain" and weak.best_block == 4 and "not significantly" in weak.reason
    )
    assert decide(10, 100, weak).strategy == "feature_extractor"


def test_similar_needs_the_imagenet_classifier_to_recognise_the_photos():
    pen, earlier = _probe(5, 80), [_probe(3, 40), _probe(4, 70)]
    assert similarity_verdict(pen, earlier, 0.05, 0.42, 0.3).verdict == "similar"
    unrecognised = similarity_verdict(pen, earlier, 0.05, 0.2, 0.3)
    assert unrecognised.verdict == "uncertain" and "0.200" in unrecognised.reason
    no_head = similarity_verdict(pen, earlier, 0.05, None, 0.3)
    assert no_head.verdict == "uncertain" and "no ImageNet classifier" in no_head.reason


# ------------------------------------------------------------- the whole measurement, both ways


def _features(x_by_block: list[np.ndarray], ids: list[str], confidence: float) -> SplitFeatures:
    n = len(ids)
    return SplitFeatures(
        image_id=np.asarray(ids),
        penultimate=x_by_block[-1],
        blocks=x_by_block[:-1],
        imagenet={"max_prob": np.full(n, confidence, np.float32),
                  "entropy": np.full(n, 0.5, np.float32),
                  "top1": np.zeros(n, np.int16), "animal": np.ones(n, np.float32)},
        backbone="toy",
    )  # fmt: skip


def _dataset(early_spread: float, late_spread: float, seed: int, confidence: float = 0.5):
    """Generated features of 8 classes x 60 photos: block 1 and the penultimate vector carry the
    classes with the given noise; block 0 is noise. Split 40 train / 20 val per class."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(8), 60)
    centres_early, centres_late = rng.normal(size=(8, 12)), rng.normal(size=(8, 24))
    x = [
        rng.normal(size=(labels.size, 6)),
        centres_early[labels] + early_spread * rng.normal(size=(labels.size, 12)),
        centres_late[labels] + late_spread * rng.normal(size=(labels.size, 24)),
    ]
    ids = [f"c{k}_{i}" for i, k in enumerate(labels)]
    val = np.tile(np.arange(60) >= 40, 8)
    frames = {
        name: pd.DataFrame({"image_id": np.asarray(ids)[rows], "label": labels[rows]})
        for name, rows in (("train", ~val), ("val", val))
    }
    feats = {
        name: _features([b[rows] for b in x], list(frames[name]["image_id"]), confidence)
        for name, rows in (("train", ~val), ("val", val))
    }
    return frames, feats


def _advise(frames, feats, **overrides):
    raw = json.loads(json.dumps(load_params(REPO / "params.yaml").model_dump(by_alias=True)))
    raw["advise"].update(overrides)
    params = parse_params(raw)
    return advise(params, frames["train"], frames["val"], feats["train"], feats["val"])


def test_an_earlier_block_that_truly_wins_is_called_unlike():
    frames, feats = _dataset(early_spread=0.4, late_spread=2.5, seed=0)
    advice = _advise(frames, feats)
    sim = advice["similarity"]
    assert sim["verdict"] == "unlike" and advice["strategy"] == "svm_early"
    assert advice["early_block"] == 1 and sim["p_value"] < 0.05
    by_block = {row["block"]: row for row in sim["probe"]}
    assert by_block[1]["val_accuracy"] > by_block[2]["val_accuracy"] + 0.2
    assert by_block[2]["strategy"] == "feature_extractor" and by_block[1]["strategy"] == "svm_early"


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_difference_that_is_noise_is_never_called_unlike(seed):
    # the same information in both: any gap between them is sampling noise
    frames, feats = _dataset(early_spread=1.6, late_spread=1.6 * math.sqrt(2), seed=seed)
    advice = _advise(frames, feats)
    assert advice["similarity"]["verdict"] in ("similar", "uncertain")
    assert advice["strategy"] == "feature_extractor"
    assert advice["similarity"]["p_value"] >= 0.05


def test_the_penultimate_features_winning_on_imagenet_like_photos_is_similar():
    frames, feats = _dataset(early_spread=3.0, late_spread=0.6, seed=4, confidence=0.45)
    advice = _advise(frames, feats)
    assert advice["cell"] == "small+similar" and advice["strategy"] == "feature_extractor"
    assert "0.450" in advice["similarity"]["reason"]
    unrecognised = _dataset(early_spread=3.0, late_spread=0.6, seed=4, confidence=0.1)
    assert _advise(*unrecognised)["cell"] == "small+uncertain"


def test_the_size_call_reports_the_learning_curve_with_its_interval():
    frames, feats = _dataset(early_spread=3.0, late_spread=1.5, seed=5)
    size = _advise(frames, feats, fractions=[0.05, 0.2, 1.0])["size"]
    assert [row["fraction"] for row in size["learning_curve"]] == [0.05, 0.2, 1.0]
    step = size["last_step"]
    low, high = step["interval"]
    assert low <= step["gain"] <= high and step["level"] == 0.95
    assert size["more_data_helps"] == (low > 0)
    assert (step["from_per_class"], step["to_per_class"]) == (8, 40)


# ----------------------------------------------------------------------- sampling and refusals


def test_samples_are_capped_per_class_seeded_and_nested():
    labels = np.repeat([0, 1, 2], [50, 7, 1])
    picked = per_class_subset(labels, 10, seed=5)
    assert np.bincount(labels[picked]).tolist() == [10, 7, 1]
    assert picked.tolist() == per_class_subset(labels, 10, seed=5).tolist()
    assert per_class_subset(labels, None, seed=5).size == labels.size
    small, mid, full = nested_fractions(labels[picked], [0.1, 0.5, 1.0], seed=0)
    assert np.bincount(labels[picked][small]).tolist() == [1, 1, 1]  # at least one per class
    assert set(small) <= set(mid) <= set(full) and full.size == picked.size


def test_splits_that_cannot_be_probed_are_refused_naming_the_fix():
    params = load_params(REPO / "params.yaml")
    one_class = pd.DataFrame({"image_id": ["a_1", "a_2"], "label": [0, 0]})
    two = pd.DataFrame({"image_id": ["a_1", "b_1"], "label": [0, 1]})
    feats = _features([np.zeros((2, 3))], ["a_1", "b_1"], 0.5)
    with pytest.raises(AdviceError, match="train.csv holds fewer than two classes"):
        draw_sample(one_class, two, feats, feats, params)
    with pytest.raises(AdviceError, match="split.val_fraction"):
        draw_sample(two, two.iloc[:0], feats, feats, params)


def test_a_candidate_larger_than_the_decoded_cache_is_skipped_naming_the_fix():
    """Lite2 wants 260 px; on the default 256 px cache it is skipped with the reason, not a
    crash in the middle of the ranking (here: Lite1's 240 px against a 64 px cache)."""
    import torch

    from petsml.advice.probe import candidate_features
    from petsml.data.decode import DecodedImages

    raw = json.loads(json.dumps(load_params(REPO / "params.yaml").model_dump(by_alias=True)))
    raw["model"]["pretrained"] = False  # the check needs the input size only, not the weights
    params = parse_params(raw)
    images = DecodedImages(np.zeros((2, 64, 64, 3), np.uint8), {"a": 0, "b": 1})
    reason = candidate_features(params, images, torch.device("cpu"))("efficientnet_lite1",
                                                                       ["a"], ["b"])  # fmt: skip
    assert "240 px" in reason and "decode.size" in reason
    reason = candidate_features(params, images, torch.device("cpu"))("nonet", ["a"], ["b"])
    assert "not a known backbone" in reason


# ---------------------------------------------------------------------- model.early_block: auto


def _params(early_block):
    raw = json.loads(json.dumps(load_params(REPO / "params.yaml").model_dump(by_alias=True)))
    raw["model"]["early_block"] = early_block
    raw["model"]["backbone"] = "efficientnet_lite0"  # these tests name it; the default may move
    return parse_params(raw)


def test_auto_is_the_default_and_resolves_to_the_advised_block(tmp_path):
    assert load_params(REPO / "params.yaml").model.early_block == "auto"
    advice = tmp_path / "advice.json"
    params = _params("auto")
    with pytest.raises(EarlyBlockError, match="dvc repro advise"):
        resolve_early_block(params, advice)
    write_json(advice, {"backbone": "efficientnet_lite0", "early_block": 2})
    assert resolve_early_block(params, advice) == 2
    assert resolve_early_block(_params(-3), tmp_path / "absent.json") == -3  # a number wins
    write_json(advice, {"backbone": "tv:resnet18", "early_block": 2})
    with pytest.raises(EarlyBlockError, match="made for backbone 'tv:resnet18'"):
        resolve_early_block(params, advice)


def test_resolved_block_reaches_the_params_and_a_stale_record_is_refused(tmp_path):
    record = tmp_path / "early_block.json"
    auto = _params("auto")
    write_resolved(auto, 4, record)
    resolved = load_resolved(auto, record)
    assert resolved.model.early_block == 4 and resolved.model.backbone == auto.model.backbone
    fixed = _params(-2)
    assert load_resolved(fixed, tmp_path / "absent.json").model.early_block == -2
    write_resolved(fixed, -2, record)  # advice resolved for another request than `auto`
    with pytest.raises(EarlyBlockError, match="re-run `dvc repro advise`"):
        load_resolved(auto, record)


def test_params_accept_auto_and_name_the_key_for_other_text():
    assert _params("auto").model.early_block == "auto"
    with pytest.raises(ConfigError, match="model.early_block"):
        _params("deepest")
    raw = load_params(REPO / "params.yaml").model_dump(by_alias=True)
    raw["advise"]["fractions"] = [0.5, 0.25]
    with pytest.raises(ConfigError, match="advise.fractions"):
        parse_params(raw)


# ----------------------------------------------------------------------------- the real stage


@pytest.fixture(scope="module")
def advised(tmp_path_factory):
    root = tmp_path_factory.mktemp("advise")
    make_dataset(root / "src", per_breed=12, test_per_breed=4)
    md5 = pack_archives(root / "src", root / "mirror")
    with MirrorServer(root / "mirror") as server:
        overrides = fake_data_params(server.url, md5) | {
            "model.image_size": 64,
            "model.precision": "fp32",
        }
        project = make_project(root / "p", overrides)
        first = dvc(project, "repro", "advise", timeout=600)
    return project, first


def _ran(output: str) -> set[str]:
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")}


@pytest.mark.integration
def test_advise_stage_writes_the_advice_contract(advised):
    project, first = advised
    assert {"featurize", "advise"} <= _ran(first.stdout)  # advise reads the one frozen pass
    assert "advice: " in first.stdout  # the one-line answer the stage prints
    advice = json.loads((project / "reports/advice.json").read_text())
    assert advice["strategy"] == catalog.for_cell(advice["cell"])
    assert advice["backbone"] == "efficientnet_lite0" and advice["size"]["verdict"] == "small"
    sim = advice["similarity"]
    assert [row["block"] for row in sim["probe"]] == list(range(sim["blocks"]))
    assert all(0 <= row["val_accuracy"] <= 1 for row in sim["probe"])
    assert sim["verdict"] in ("similar", "uncertain", "unlike") and sim["reason"]
    assert advice["early_block"] == sim["best_block"] < sim["blocks"] - 1
    curve = advice["size"]["learning_curve"]
    assert [row["fraction"] for row in curve] == [0.1, 0.25, 0.5, 1.0]
    assert sim["imagenet"]["available"] and 0 < sim["imagenet"]["mean_max_softmax"] <= 1
    ranking = advice["backbones"]["ranking"]
    assert [row["backbone"] for row in ranking] == ["efficientnet_lite0"]
    assert np.isfinite(ranking[0]["logme"])
    plots = project / "reports/advice"
    assert list(pd.read_csv(plots / "probe_depth.csv").block) == list(range(sim["blocks"]))
    assert len(pd.read_csv(plots / "learning_curve.csv")) == 4
    assert (plots / "probe_depth.png").stat().st_size and (plots / "learning_curve.png").exists()
    assert "Which strategy should I ship?" in (project / "reports/advice.md").read_text()
    record = json.loads((project / "data/early_block.json").read_text())
    assert record == {
        "backbone": "efficientnet_lite0", "requested": "auto", "early_block": advice["early_block"]
    }  # fmt: skip
    shown = dvc(project, "plots", "show", "--json").stdout
    assert "probe_depth.csv" in shown and "learning_curve.csv" in shown


@pytest.mark.integration
def test_advise_thresholds_change_the_advice_without_a_second_frozen_pass(advised):
    project, _ = advised
    assert _ran(dvc(project, "repro", "advise").stdout) == set()  # nothing changed: no work
    set_params(project, {"advise.small_below": 1})  # the advice changes, the block does not
    ran = _ran(dvc(project, "repro", "advise").stdout)
    assert ran == {"params", "advise"}  # featurize (upstream) is not touched
    assert json.loads((project / "reports/advice.json").read_text())["size"]["verdict"] == "large"
