"""The cached finetune_top path (petsml.training.cached_top): the frozen part's outputs cached
once, the top blocks trained on them, equal to the full forward where it must be."""

from __future__ import annotations

import logging
import re

import numpy as np
import pytest
import torch

from petsml.data.decode import DecodedImages
from petsml.io import read_json
from petsml.models.backbones import create_backbone
from petsml.training import cached_top, finetune, loop, top_split
from petsml.training.param_groups import build_model, build_param_groups
from tests.finetune_data import (
    BACKBONE,
    NUM_CLASSES,
    Crash,
    _crash_after,
    _params,
    _run,
)

# data_dirs and one_thread: fixtures of tests/finetune_data.py (a plugin of tests/conftest.py)
pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_thread")]


@pytest.mark.parametrize(
    ("name", "size"), [(BACKBONE, 32), ("efficientnet_lite0", 96), ("tv:resnet18", 64)]
)
def test_split_backbone_top_part_of_frozen_part_is_forward_features(name, size):
    torch.manual_seed(0)
    backbone = create_backbone(name, pretrained=False).eval()
    n = len(backbone.blocks())
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        want = backbone.forward_features(x)
        for k in range(1, n):
            split = top_split.split_backbone(backbone, k)
            assert split is not None, f"{name}: no split at unfreeze_blocks={k}"
            h = split.frozen_part(x)
            assert h.ndim == 4 and h.shape[0] == 2
            torch.testing.assert_close(split.top_part(h), want, rtol=1e-4, atol=1e-5)
        # Nothing frozen: nothing worth caching.
        assert top_split.split_backbone(backbone, n) is None


def test_split_frozen_part_owns_exactly_the_frozen_blocks():
    params = _params(**{"finetune_top.unfreeze_blocks": 2})
    model = build_model("finetune_top", params, NUM_CLASSES)
    groups = build_param_groups("finetune_top", model, params)
    split = top_split.split_backbone(model.backbone, 2)
    bottom = {id(p) for m in split.bottom for p in m.parameters()}
    frozen = {id(p) for b in groups.frozen_blocks for p in b.parameters()}
    assert bottom == frozen and all(
        not p.requires_grad for m in split.bottom for p in m.parameters()
    )
    top = top_split.TopModel(split, model.head)
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert {id(p) for p in top.parameters()} == trainable


def test_cached_val_metrics_match_the_full_forward(data_dirs):
    """float16 cached maps of eval-mode frozen blocks give the full model's val numbers."""
    splits, decoded_dir = data_dirs
    params = _params()
    model = build_model("finetune_top", params, NUM_CLASSES)
    build_param_groups("finetune_top", model, params)
    decoded = DecodedImages.open(decoded_dir)
    val = loop.load_split_data("val", "breed", splits, decoded)
    prep = model.backbone.preprocessing
    cpu = torch.device("cpu")
    full = finetune.evaluate(model, model, val, prep, cpu, 64, precision="fp32")
    split = top_split.split_backbone(model.backbone, params.finetune_top.unfreeze_blocks)
    cache = cached_top.build_cache(split, val.images, val.labels, prep, cpu, precision="fp32")
    assert cache.maps.dtype == torch.float16 and cache.maps.shape[:2] == (len(val.labels), 1)
    top = top_split.TopModel(split, model.head)
    cached = cached_top.evaluate(top, model, cache, cpu, 64, "fp32")
    assert cached[0] == pytest.approx(full[0], rel=1e-2)
    assert cached[1] == pytest.approx(full[1])


def test_windows_gathers_each_images_own_offset():
    maps = torch.arange(3 * 2 * 5 * 6, dtype=torch.float32).view(3, 2, 5, 6)
    top, left = torch.tensor([0, 2, 1]), torch.tensor([3, 0, 1])
    got = cached_top.windows(maps, top, left, (3, 3))
    for i in range(3):
        t, lft = int(top[i]), int(left[i])
        torch.testing.assert_close(got[i], maps[i, :, t : t + 3, lft : lft + 3])


def test_shifted_cache_holds_whole_images_their_mirrors_and_the_window_size():
    torch.manual_seed(0)
    backbone = create_backbone("efficientnet_lite0", pretrained=False, image_size=64).eval()
    split = top_split.split_backbone(backbone, 2)
    prep = backbone.preprocessing
    images = np.random.default_rng(0).integers(0, 256, (3, 96, 96, 3), dtype=np.uint8)
    cpu = torch.device("cpu")
    cache = cached_top.build_cache(
        split, images, np.arange(3), prep, cpu, shifts=True, flip="image", precision="fp32"
    )
    centre = cached_top.build_cache(split, images, np.arange(3), prep, cpu, precision="fp32")
    # 96 px whole image at stride 16 -> 6x6 map; the 64 px crop's map is 4x4: 3x3 offsets.
    assert cache.maps.shape[:2] == (3, 2) and tuple(cache.maps.shape[-2:]) == (6, 6)
    assert cache.window == tuple(centre.maps.shape[-2:]) == (4, 4) and cache.positions == (3, 3)
    assert centre.window is None and centre.positions == (1, 1)
    with torch.inference_mode():
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255)
        mean = torch.tensor(prep.mean).view(1, 3, 1, 1)
        std = torch.tensor(prep.std).view(1, 3, 1, 1)
        mirrored = split.frozen_part(((x - mean) / std).flip(-1))
    torch.testing.assert_close(cache.maps[:, 1].float(), mirrored, rtol=1e-2, atol=1e-2)


def test_draw_is_seeded_and_reaches_every_offset_and_view():
    maps = torch.arange(2 * 2 * 1 * 4 * 4, dtype=torch.float16).view(2, 2, 1, 4, 4)
    cache = cached_top.FeatureCache(maps, torch.zeros(2, dtype=torch.long), window=(2, 2))
    idx = torch.zeros(400, dtype=torch.long)
    a = cached_top.draw(cache, idx, np.random.default_rng(5))
    b = cached_top.draw(cache, idx, np.random.default_rng(5))
    assert a.shape == (400, 1, 2, 2) and torch.equal(a, b)
    corners = {tuple(w.flatten().tolist()) for w in a}
    assert len(corners) == 2 * 3 * 3  # 2 views x 3x3 offsets
    cache.flip_maps = True
    flipped = {
        tuple(w.flatten().tolist()) for w in cached_top.draw(cache, idx, np.random.default_rng(5))
    }
    assert len(flipped) == 2 * 2 * 3 * 3  # and each mirrored or not
    assert {tuple(w.flip(-1).flatten().tolist()) for w in a} <= flipped


@pytest.mark.parametrize(("flip", "views"), [("map", 1), ("image", 2), ("none", 1)])
def test_finetune_top_runs_the_cached_path(data_dirs, tmp_path, caplog, monkeypatch, flip, views):
    def no_full_forward(*args, **kwargs):
        raise AssertionError("finetune_top ran the full forward pass")

    monkeypatch.setattr(finetune, "train_epoch_full", no_full_forward)
    params = _params(**{"train.epochs": 2, "finetune_top.cache_flip": flip})
    with caplog.at_level(logging.INFO, logger="petsml.training"):
        summary, out = _run(data_dirs, tmp_path, "finetune_top", params)
    assert "cached the frozen blocks' outputs" in caplog.text
    # 40 px decoded images, a 32 px model: the whole-image map is wider than the crop's.
    shape = re.search(r"\((\d) view\(s\), (\d)x(\d) window offsets", caplog.text)
    assert shape and int(shape[1]) == views and int(shape[2]) > 1 and int(shape[3]) > 1
    assert summary["epochs_run"] == 2 and 0 <= summary["val_accuracy"] <= 1
    history = read_json(out / "history.json")["epochs"]
    assert all(np.isfinite(r["train_loss"]) for r in history)


@pytest.mark.parametrize("strategy", ["finetune_top", "finetune_full"])
def test_head_init_probe_starts_from_a_probe_and_random_does_not(
    data_dirs, tmp_path, caplog, strategy
):
    probe = _params(**{"train.epochs": 1})
    with caplog.at_level(logging.INFO, logger="petsml.training.probe_init"):
        _run(data_dirs, tmp_path, strategy, probe, name="probe")
    assert "head initialised from a linear probe" in caplog.text
    caplog.clear()
    random_head = _params(**{"train.epochs": 1, f"{strategy}.head_init": "random"})
    with caplog.at_level(logging.INFO, logger="petsml.training.probe_init"):
        summary, _ = _run(data_dirs, tmp_path, strategy, random_head, name="random")
    assert "linear probe" not in caplog.text and summary["epochs_run"] == 1


def test_finetune_top_falls_back_to_the_full_forward_when_it_cannot_split(
    data_dirs, tmp_path, caplog, monkeypatch
):
    monkeypatch.setattr(top_split, "split_backbone", lambda *a, **k: None)
    params = _params(**{"train.epochs": 1})
    with caplog.at_level(logging.INFO, logger="petsml.training"):
        summary, _ = _run(data_dirs, tmp_path, "finetune_top", params)
    assert "cannot be split" in caplog.text and "cached the frozen" not in caplog.text
    assert summary["epochs_run"] == 1


def test_cached_and_full_finetune_top_reach_comparable_val_accuracy(
    data_dirs, tmp_path, monkeypatch
):
    settings = {"finetune_top.lr": 0.03, "finetune_top.backbone_lr_scale": 1.0}
    params = _params(**{"train.epochs": 4, "train.patience": 4, **settings})
    cached, _ = _run(data_dirs, tmp_path, "finetune_top", params, name="cached")
    monkeypatch.setattr(top_split, "split_backbone", lambda *a, **k: None)
    full, _ = _run(data_dirs, tmp_path, "finetune_top", params, name="full")
    # 8 val images, 4 breeds, a random-init network: only a coarse comparison is meaningful.
    assert abs(cached["val_accuracy"] - full["val_accuracy"]) <= 0.25 + 1e-9
    assert cached["val_accuracy"] >= 0.25  # chance level over the 4 breeds (0.375 when written)
    assert cached["val_accuracy"] >= full["val_accuracy"] - 0.125 - 1e-9


def test_cached_finetune_top_resumes_like_an_uninterrupted_run(data_dirs, tmp_path):
    params = _params(**{"train.epochs": 3})
    reference, _ = _run(data_dirs, tmp_path, "finetune_top", params, name="reference")
    ref = read_json(tmp_path / "reference" / "finetune_top" / "history.json")["epochs"]
    seen: list[int] = []
    with pytest.raises(Crash):
        _run(data_dirs, tmp_path, "finetune_top", params, on_epoch_end=_crash_after(1, seen))
    seen.clear()
    summary, out = _run(
        data_dirs, tmp_path, "finetune_top", params, resume=True, on_epoch_end=_crash_after(0, seen)
    )
    assert seen == [2, 3] and summary["resumed_from_epoch"] == 1
    history = read_json(out / "history.json")["epochs"]
    for key in ("train_loss", "val_loss", "val_accuracy", "lr"):
        assert [r[key] for r in history] == pytest.approx(
            [r[key] for r in ref], rel=1e-4, abs=1e-6
        ), key
    assert summary["val_accuracy"] == pytest.approx(reference["val_accuracy"])
