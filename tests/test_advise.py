"""The advise stage: LogME, the 2x2 decision, every block's features, ``early_block: auto``,
and the real stage under `dvc repro` in a tiny project fed by a loopback mirror."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import multivariate_normal

from petsml.advice.advise import AdviceError, Sample, draw_sample, rank_backbones, spearman
from petsml.advice.decision import (
    STRATEGY_OF_CELL,
    decide,
    more_data_helps,
    peak_block,
    similarity_verdict,
)
from petsml.advice.early_block import (
    EarlyBlockError,
    load_resolved,
    resolve_early_block,
    write_resolved,
)
from petsml.advice.logme import fit_column, log_evidence, logme
from petsml.advice.probe import (
    block_outputs,
    mean_pool,
    nested_fractions,
    per_class_subset,
    rich_pool,
)
from petsml.config import ConfigError, load_params, parse_params
from petsml.data.decode import DecodedImages
from petsml.io import write_json
from petsml.models.backbones import create_backbone
from tests.fakedata import MirrorServer, make_dataset, pack_archives
from tests.project import REPO, dvc, fake_data_params, make_project, set_params

pytestmark = pytest.mark.slow(seconds=70)

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


def test_spearman_ranks_with_ties_and_says_nothing_on_constants():
    from scipy.stats import spearmanr

    a, b = [0.1, 0.4, 0.4, 0.9, 0.3], [1.0, 2.0, 5.0, 4.0, 0.5]
    assert spearman(a, b) == pytest.approx(spearmanr(a, b)[0])
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2], [1, 2]) is None and spearman([1, 2, 3], [5, 5, 5]) is None


# ------------------------------------------------------------------------------ the 2x2 table

RISING = [0.30, 0.37, 0.43, 0.56, 0.90, 0.92]  # measured on real pet photos (Lite0)
EARLY_PEAK = [0.40, 0.55, 0.62, 0.50, 0.45, 0.44]


@pytest.mark.parametrize(
    ("median", "rich", "cell", "strategy"),
    [
        (40, RISING, "small+similar", "feature_extractor"),
        (40, EARLY_PEAK, "small+unlike", "svm_early"),
        (500, RISING, "large+similar", "finetune_top"),
        (500, EARLY_PEAK, "large+unlike", "finetune_full"),
    ],
)
def test_each_cell_of_the_table_gives_its_strategy(median, rich, cell, strategy):
    mean = [0.2, 0.3, 0.35, 0.6, 0.5, 0.55]  # svm_early's own view peaks at block 3
    decision = decide(median, rich, mean, small_below=100, tolerance=0.02)
    assert decision.cell == cell
    assert decision.strategy == strategy == STRATEGY_OF_CELL[tuple(cell.split("+"))]
    assert decision.early_block == (3 if strategy == "svm_early" else None)
    assert decision.why


def test_size_threshold_is_strict_and_a_peak_within_tolerance_is_still_similar():
    assert decide(99.5, RISING, RISING, 100, 0.02).size == "small"
    assert decide(100, RISING, RISING, 100, 0.02).size == "large"
    within = [0.5, 0.91, 0.90]
    assert peak_block(within, 0.02) == 2 and similarity_verdict(within, 0.02) == "similar"
    assert similarity_verdict(within, 0.0) == "unlike"


def test_more_data_helps_when_the_last_step_still_gains():
    assert more_data_helps([0.2, 0.4, 0.6, 0.7], 0.02)
    assert not more_data_helps([0.2, 0.6, 0.70, 0.71], 0.02)


# ----------------------------------------------------------------------- features and sampling


@pytest.mark.parametrize("name", ["efficientnet_lite0", "tv:resnet18"])
def test_each_block_output_is_what_that_early_block_pools(name):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 64)
    whole = create_backbone(name, pretrained=False, early_block=-1, image_size=64).eval()
    with torch.no_grad():
        outs, pen = block_outputs(whole, x)
        assert len(outs) == len(whole.blocks())
        assert torch.allclose(pen, whole.forward_features(x), atol=1e-5)
        state = whole.state_dict()
        for block in range(len(outs)):
            at = create_backbone(name, pretrained=False, early_block=block, image_size=64)
            at.load_state_dict(state)
            expected = at.eval().forward_early(x)
            assert torch.allclose(mean_pool(outs[block]), expected, atol=1e-5), block


def test_rich_pooling_keeps_std_and_a_spatial_grid():
    t = torch.zeros(1, 3, 8, 8)
    t[:, :, :4, :4] = 1.0  # only the top-left quarter lit: the mean alone cannot say where
    pooled = rich_pool(t, grid=2)
    assert pooled.shape == (1, 3 * (2 + 4))
    assert torch.allclose(pooled[0, :3], torch.full((3,), 0.25))
    assert torch.allclose(pooled[0, 3:6], torch.full((3,), 0.25**0.5 * 0.75**0.5))
    assert pooled[0, 6:].reshape(3, 2, 2)[0].tolist() == [[1.0, 0.0], [0.0, 0.0]]


def test_samples_are_capped_per_class_seeded_and_nested():
    labels = np.repeat([0, 1, 2], [50, 7, 1])
    picked = per_class_subset(labels, 10, seed=5)
    assert np.bincount(labels[picked]).tolist() == [10, 7, 1]
    assert picked.tolist() == per_class_subset(labels, 10, seed=5).tolist()
    small, mid, full = nested_fractions(labels[picked], [0.1, 0.5, 1.0], seed=0)
    assert np.bincount(labels[picked][small]).tolist() == [1, 1, 1]  # at least one per class
    assert set(small) <= set(mid) <= set(full) and full.size == picked.size


def test_splits_that_cannot_be_probed_are_refused_naming_the_fix(tmp_path):
    params = _params(tmp_path, -3)
    one_class = pd.DataFrame({"image_id": ["a_1", "a_2"], "label": [0, 0]})
    two = pd.DataFrame({"image_id": ["a_1", "b_1"], "label": [0, 1]})
    with pytest.raises(AdviceError, match="train.csv holds fewer than two classes"):
        draw_sample(one_class, two, params)
    with pytest.raises(AdviceError, match="split.val_fraction"):
        draw_sample(two, two.iloc[:0], params)


def test_a_candidate_larger_than_the_decoded_cache_is_skipped_naming_the_fix(tmp_path):
    """Lite2 wants 260 px; on the default 256 px cache it is skipped with the reason, not a
    crash in the middle of the ranking (here: Lite1's 240 px against a 64 px cache)."""
    raw = json.loads(json.dumps(_params(tmp_path, -3).model_dump(by_alias=True)))
    raw["advise"]["backbones"] = ["efficientnet_lite1"]
    raw["model"]["pretrained"] = False  # the check needs the input size only, not the weights
    params = parse_params(raw)
    ids = [f"a_{i}" for i in range(4)] + [f"b_{i}" for i in range(4)]
    images = DecodedImages(np.zeros((8, 64, 64, 3), np.uint8), {k: i for i, k in enumerate(ids)})
    labels = np.array([0, 0, 0, 1, 0, 1, 1, 1])
    sample = Sample(ids[:6], labels[:6], ids[6:], labels[6:])
    main = np.random.default_rng(0).normal(size=(8, 5)) + labels[:, None]
    ranks = rank_backbones(params, images, sample, main, torch.device("cpu"))
    assert [row["backbone"] for row in ranks["ranking"]] == ["efficientnet_lite0"]
    (skipped,) = ranks["skipped"]
    assert skipped["backbone"] == "efficientnet_lite1"
    assert "240 px" in skipped["reason"] and "decode.size" in skipped["reason"]


# ---------------------------------------------------------------------- model.early_block: auto


def _params(tmp_path, early_block):
    raw = json.loads(json.dumps(load_params(REPO / "params.yaml").model_dump(by_alias=True)))
    raw["model"]["early_block"] = early_block
    raw["model"]["backbone"] = "efficientnet_lite0"  # these tests name it; the default may move
    return parse_params(raw)


def test_auto_early_block_is_resolved_from_advice_json(tmp_path):
    advice = tmp_path / "advice.json"
    params = _params(tmp_path, "auto")
    with pytest.raises(EarlyBlockError, match="dvc repro advise"):
        resolve_early_block(params, advice)
    write_json(
        advice, {"backbone": "efficientnet_lite0", "similarity": {"best_mean_pool_block": 2}}
    )
    assert resolve_early_block(params, advice) == 2
    assert resolve_early_block(_params(tmp_path, -3), tmp_path / "absent.json") == -3
    write_json(advice, {"backbone": "tv:resnet18", "similarity": {"best_mean_pool_block": 2}})
    with pytest.raises(EarlyBlockError, match="made for backbone 'tv:resnet18'"):
        resolve_early_block(params, advice)


def test_resolved_block_reaches_the_params_and_a_stale_record_is_refused(tmp_path):
    record = tmp_path / "early_block.json"
    auto = _params(tmp_path, "auto")
    write_resolved(auto, 4, record)
    resolved = load_resolved(auto, record)
    assert resolved.model.early_block == 4 and resolved.model.backbone == auto.model.backbone
    fixed = _params(tmp_path, -2)
    assert (
        load_resolved(fixed, tmp_path / "absent.json").model.early_block == -2
    )  # no advice needed
    write_resolved(fixed, -2, record)  # advice resolved for another request than `auto`
    with pytest.raises(EarlyBlockError, match="re-run `dvc repro advise`"):
        load_resolved(auto, record)


def test_params_accept_auto_and_name_the_key_for_other_text(tmp_path):
    assert _params(tmp_path, "auto").model.early_block == "auto"
    with pytest.raises(ConfigError, match="model.early_block"):
        _params(tmp_path, "deepest")
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
            "features.batch_size": 16,
            "model.precision": "fp32",
        }
        project = make_project(root / "p", overrides)
        first = dvc(project, "repro", "advise", timeout=600)
    return project, first


def _ran(output: str) -> set[str]:
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")}


def test_advise_stage_writes_the_advice_contract(advised):
    project, first = advised
    assert "advise" in _ran(first.stdout)
    assert "advice: " in first.stdout  # the one-line answer the stage prints
    advice = json.loads((project / "reports/advice.json").read_text())
    assert advice["strategy"] == STRATEGY_OF_CELL[tuple(advice["cell"].split("+"))]
    assert advice["backbone"] == "efficientnet_lite0" and advice["size"]["verdict"] == "small"
    blocks = len(create_backbone("efficientnet_lite0", pretrained=False, image_size=64).blocks())
    probe = advice["similarity"]["probe"]
    assert [row["block"] for row in probe] == list(range(blocks))
    for row in probe:
        assert 0 <= row["rich_pool_val_accuracy"] <= 1 and 0 <= row["mean_pool_val_accuracy"] <= 1
        assert row["rich_pool_dim"] > row["mean_pool_dim"] or row["block"] == blocks - 1
    curve = advice["size"]["learning_curve"]
    assert [row["fraction"] for row in curve] == [0.1, 0.25, 0.5, 1.0]
    assert all(np.isfinite(row["rich_pool_logme"]) for row in probe)
    assert advice["similarity"]["imagenet"]["available"]
    assert 0 < advice["similarity"]["imagenet"]["mean_max_softmax"] <= 1
    ranking = advice["backbones"]["ranking"]
    assert [row["backbone"] for row in ranking] == ["efficientnet_lite0"]
    assert np.isfinite(ranking[0]["logme"])
    plots = project / "reports/advice"
    assert list(pd.read_csv(plots / "probe_depth.csv").block) == list(range(blocks))
    assert len(pd.read_csv(plots / "learning_curve.csv")) == 4
    assert (plots / "probe_depth.png").stat().st_size and (plots / "learning_curve.png").exists()
    assert "Which strategy should I ship?" in (project / "reports/advice.md").read_text()
    record = json.loads((project / "data/early_block.json").read_text())
    assert record == {"backbone": "efficientnet_lite0", "requested": -3, "early_block": -3}
    shown = dvc(project, "plots", "show", "--json").stdout
    assert "probe_depth.csv" in shown and "learning_curve.csv" in shown


def test_auto_block_feeds_featurize_and_advise_thresholds_do_not_rerun_it(advised):
    project, _ = advised
    set_params(project, {"model.early_block": "auto"})
    ran = _ran(dvc(project, "repro", "featurize", timeout=600).stdout)
    assert ran == {"params", "advise", "featurize"}
    advice = json.loads((project / "reports/advice.json").read_text())
    best = advice["similarity"]["best_mean_pool_block"]
    assert json.loads((project / "data/early_block.json").read_text())["early_block"] == best
    with np.load(project / "data/features/train.npz") as features:
        assert features["early"].shape[1] == advice["similarity"]["probe"][best]["mean_pool_dim"]

    assert _ran(dvc(project, "repro", "featurize").stdout) == set()  # nothing changed: no work
    set_params(project, {"advise.small_below": 1})  # the advice changes, the block does not
    ran = _ran(dvc(project, "repro", "featurize").stdout)
    assert ran == {"params", "advise"}
    assert json.loads((project / "reports/advice.json").read_text())["size"]["verdict"] == "large"
