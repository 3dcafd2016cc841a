"""The trained strategies, really trained: a tiny random-init timm network on tiny images."""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from petsml.config import parse_params
from petsml.data.decode import DecodedImages, decode_images
from petsml.io import read_json
from petsml.models.backbones import create_backbone
from petsml.models.classifier import load_classifier
from petsml.testing.fakedata import make_dataset, split_rows
from petsml.testing.project import apply_overrides
from petsml.training import cached_top, checkpoint, finetune, loop, top_split
from petsml.training.checkpoint import CHECKPOINT
from petsml.training.finetune import train_strategy
from petsml.training.loop import lr_factor
from petsml.training.param_groups import build_model, build_param_groups

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
BACKBONE = "test_efficientnet"  # timm's tiny test network: trains in well under a second
NUM_CLASSES = 37  # task breed


class Crash(RuntimeError):
    """Stands in for a killed process after an epoch's checkpoint is on disk."""


def _params(**overrides):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    settings = {
        "model.backbone": BACKBONE,
        "model.pretrained": False,  # no network in tests
        "model.image_size": 32,
        "model.precision": "fp32",  # exact comparisons hold with and without native bf16
        "decode.size": 40,
        "train.device": "cpu",
        "train.epochs": 3,
        "train.batch_size": 8,
        "train.patience": 3,
        "train.warmup_epochs": 1,
        "train.seed": 0,
        "features.batch_size": 64,
    } | overrides
    return parse_params(apply_overrides(raw, settings))


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: threads only add overhead, and they thrash on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data_dirs(tmp_path_factory):
    """Split CSVs and a decoded cache for 4 breeds: 24 train and 8 val images, 40 px."""
    root = tmp_path_factory.mktemp("pets")
    ds = make_dataset(root / "src", per_breed=8, test_per_breed=0, size=(48, 44), quirks=False)
    frame = pd.DataFrame(split_rows(ds))
    is_val = frame["image_id"].str.endswith(("_1", "_2"))
    splits = root / "splits"
    splits.mkdir()
    frame[~is_val].to_csv(splits / "train.csv", index=False)
    frame[is_val].to_csv(splits / "val.csv", index=False)
    decode_images(frame, root / "src", root / "decoded", size=40, workers=1)
    return splits, root / "decoded"


def _run(data_dirs, tmp_path, strategy, params, *, resume=False, on_epoch_end=None, name="out"):
    splits, decoded = data_dirs
    out = tmp_path / name / strategy
    summary = train_strategy(
        strategy,
        params,
        out,
        resume=resume,
        checkpoint_dir=tmp_path / "checkpoints" / strategy,
        splits_dir=splits,
        decoded_dir=decoded,
        on_epoch_end=on_epoch_end,
    )
    return summary, out


def _crash_after(epoch_to_crash: int, seen: list[int]):
    def callback(epoch, model, record):
        seen.append(epoch)
        if epoch == epoch_to_crash:
            raise Crash(f"killed after epoch {epoch}")

    return callback


def _clone(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("strategy", ["finetune_top", "finetune_full", "scratch"])
def test_strategy_trains_end_to_end_and_writes_the_model_directory(data_dirs, tmp_path, strategy):
    params = _params(**{"train.epochs": 2})
    summary, out = _run(data_dirs, tmp_path, strategy, params)

    assert sorted(p.name for p in out.iterdir()) == ["history.json", "model.pt", "summary.json"]
    assert not (tmp_path / "checkpoints" / strategy / CHECKPOINT).exists()
    history = read_json(out / "history.json")
    assert history["search"] == []
    assert [r["epoch"] for r in history["epochs"]] == [1, 2]
    for record in history["epochs"]:
        assert set(record) == {
            "epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds"
        }  # fmt: skip
        assert np.isfinite(record["train_loss"]) and np.isfinite(record["val_loss"])
        assert 0 <= record["val_accuracy"] <= 1 and record["lr"] > 0
    assert read_json(out / "summary.json") == summary
    assert summary["strategy"] == strategy and summary["task"] == "breed"
    assert summary["backbone"] == BACKBONE and summary["device"] == "cpu"
    # Epoch 0 is the probe-initialised model (head_init: probe), kept when no epoch beats it.
    assert summary["epochs_run"] == 2 and summary["best_epoch"] in (0, 1, 2)
    best = max(r["val_accuracy"] for r in history["epochs"])
    if summary["best_epoch"]:
        assert summary["val_accuracy"] == pytest.approx(best)
    else:
        assert summary["val_accuracy"] >= best and strategy != "scratch"
    assert summary["params"]["lr"] == getattr(params, strategy).lr

    model, spec = load_classifier(out / "model.pt")
    meta = spec if "strategy" in spec else spec.get("meta", spec)
    assert meta["strategy"] == strategy and meta["task"] == "breed"
    assert meta["decode_size"] == 40 and meta["backbone"] == BACKBONE
    assert len(meta["class_names"]) == NUM_CLASSES
    size = model.backbone.preprocessing.input_size
    with torch.no_grad():
        logits = model.eval()(torch.randn(2, 3, size, size))
    assert logits.shape == (2, NUM_CLASSES)


def test_finetune_top_trains_only_the_head_and_top_blocks(data_dirs, tmp_path):
    params = _params(**{"train.epochs": 1, "finetune_top.unfreeze_blocks": 2})
    initial = build_model("finetune_top", params, NUM_CLASSES)
    final = {}

    def keep(epoch, model, record):
        final["model"] = model

    _run(data_dirs, tmp_path, "finetune_top", params, on_epoch_end=keep)
    before = [_clone(b) for b in initial.backbone.blocks()]
    after = [_clone(b) for b in final["model"].backbone.blocks()]
    assert len(before) > 2
    for i, (b, a) in enumerate(zip(before[:-2], after[:-2], strict=True)):
        # parameters and BatchNorm running statistics (frozen blocks stay in eval mode)
        assert _same(b, a), f"frozen block {i} changed"
    for i, (b, a) in enumerate(zip(before[-2:], after[-2:], strict=True)):
        assert not _same(b, a), f"unfrozen block {len(before) - 2 + i} did not train"
    assert not _same(_clone(initial.head), _clone(final["model"].head))


def test_finetune_full_decays_the_learning_rate_towards_the_stem():
    params = _params(**{"finetune_full.lr": 1e-3, "finetune_full.layer_decay": 0.5})
    model = build_model("finetune_full", params, NUM_CLASSES)
    groups = build_param_groups("finetune_full", model, params)
    n_blocks = len(list(model.backbone.blocks()))
    lrs = [g["lr"] for g in groups.param_groups]
    assert groups.param_groups[0]["name"] == "head" and lrs[0] == pytest.approx(1e-3)
    assert len(lrs) == n_blocks + 1  # one group per block
    assert [g["name"] for g in groups.param_groups[1:]] == [
        f"block{i}" for i in reversed(range(n_blocks))
    ]
    for upper, lower in zip(lrs, lrs[1:], strict=False):
        assert lower == pytest.approx(upper * 0.5)
    grouped = {id(p) for g in groups.param_groups for p in g["params"]}
    assert grouped == {id(p) for p in model.parameters()} and not groups.frozen_blocks

    top = build_param_groups("finetune_top", build_model("finetune_top", params, 37), params)
    assert [g["lr"] for g in top.param_groups] == pytest.approx(
        [params.finetune_top.lr] + [params.finetune_top.lr * 0.1] * 2
    )


def test_lr_schedule_warms_up_then_follows_a_cosine():
    assert [lr_factor(s, 10, 4) for s in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert lr_factor(4, 10, 4) == pytest.approx(1.0)
    assert lr_factor(7, 10, 4) == pytest.approx(0.5)
    assert lr_factor(10, 10, 4) == pytest.approx(0.0)
    assert lr_factor(0, 10, 0) == pytest.approx(1.0)


def test_interrupted_run_resumes_at_the_next_epoch_and_matches_an_uninterrupted_one(
    data_dirs, tmp_path
):
    params = _params(**{"train.epochs": 3, "finetune_full.layer_decay": 0.5})
    reference, _ = _run(data_dirs, tmp_path, "finetune_full", params, name="reference")
    ref_history = read_json(tmp_path / "reference" / "finetune_full" / "history.json")["epochs"]

    seen: list[int] = []
    with pytest.raises(Crash):
        _run(data_dirs, tmp_path, "finetune_full", params, on_epoch_end=_crash_after(1, seen))
    checkpoint = tmp_path / "checkpoints" / "finetune_full" / CHECKPOINT
    assert seen == [1] and checkpoint.exists()
    assert not (tmp_path / "out" / "finetune_full").exists()
    # The optimizer really trained with one group per block and decaying rates.
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    initial = [g["initial_lr"] for g in state["optimizer"]["param_groups"]]
    assert len(initial) > 2
    assert np.allclose(np.array(initial[1:]) / np.array(initial[:-1]), 0.5)

    seen.clear()
    summary, out = _run(
        data_dirs,
        tmp_path,
        "finetune_full",
        params,
        resume=True,
        on_epoch_end=_crash_after(0, seen),
    )
    assert seen == [2, 3]
    history = read_json(out / "history.json")["epochs"]
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert summary["resumed_from_epoch"] == 1 and summary["epochs_run"] == 3
    assert not checkpoint.exists()
    # Model, optimizer, schedule and RNG state all came back: the same numbers as no crash.
    for key in ("train_loss", "val_loss", "val_accuracy", "lr"):
        assert [r[key] for r in history] == pytest.approx(
            [r[key] for r in ref_history], rel=1e-4, abs=1e-6
        ), key
    assert summary["val_accuracy"] == pytest.approx(reference["val_accuracy"])


def test_changed_params_or_resume_off_start_fresh(data_dirs, tmp_path, caplog):
    params = _params(**{"train.epochs": 2})
    seen: list[int] = []
    with pytest.raises(Crash):
        _run(data_dirs, tmp_path, "finetune_top", params, on_epoch_end=_crash_after(1, seen))

    changed = _params(**{"train.epochs": 2, "finetune_top.lr": 5e-4})
    seen.clear()
    with caplog.at_level(logging.INFO, logger="petsml.training"):
        with pytest.raises(Crash):
            _run(
                data_dirs,
                tmp_path,
                "finetune_top",
                changed,
                resume=True,
                on_epoch_end=_crash_after(1, seen),
            )
    assert seen == [1]
    assert "starting fresh" in caplog.text and "fingerprint" in caplog.text

    # The checkpoint now matches ``changed``, but resume=False still starts at epoch 1.
    seen.clear()
    summary, _ = _run(
        data_dirs, tmp_path, "finetune_top", changed, on_epoch_end=_crash_after(0, seen)
    )
    assert seen == [1, 2] and summary["resumed_from_epoch"] is None


def _copy_package(dest: Path) -> Path:
    shutil.copytree(REPO / "petsml", dest / "petsml", ignore=shutil.ignore_patterns("__pycache__"))
    return dest / "petsml"


def test_code_digest_changes_with_any_training_source_and_nothing_else(tmp_path):
    copy = _copy_package(tmp_path)
    assert checkpoint.code_digest(copy) == checkpoint.code_digest()  # content, not location
    (copy / "tracking" / "runs.py").write_text("# tracking cannot change the weights\n")
    assert checkpoint.code_digest(copy) == checkpoint.code_digest()
    for edit in ("training/heads.py", "models/backbones.py", "data/tensors.py", "config.py"):
        edited = _copy_package(tmp_path / edit.replace("/", "_"))
        with (edited / edit).open("a") as f:
            f.write("# a fix\n")
        assert checkpoint.code_digest(edited) != checkpoint.code_digest(), edit
    (copy / "training" / "new_module.py").write_text("")
    assert checkpoint.code_digest(copy) != checkpoint.code_digest()


def test_checkpoint_is_not_resumed_after_a_code_edit_or_a_changed_photo(
    data_dirs, tmp_path, monkeypatch, caplog
):
    """Interrupt, change the code or one photo's pixels, rerun: it starts fresh. Unchanged: it
    resumes."""
    splits, decoded = data_dirs
    params = _params(**{"train.epochs": 2})
    changed_photo = tmp_path / "decoded"
    shutil.copytree(decoded, changed_photo)
    pixels = np.load(changed_photo / "images_u8.npy", mmap_mode="r+")
    pixels[0, 0, 0] = 255 - pixels[0, 0, 0]  # one pixel of the first photo
    pixels.flush()
    del pixels
    edited = _copy_package(tmp_path / "edited")
    with (edited / "training" / "cached_top.py").open("a") as f:
        f.write("# a bug fix\n")

    def interrupted_then(decoded_dir: Path, package_root: Path | None = None) -> list[int]:
        seen: list[int] = []
        with pytest.raises(Crash):
            _run(data_dirs, tmp_path, "scratch", params, on_epoch_end=_crash_after(1, seen))
        seen.clear()
        with monkeypatch.context() as patch:
            if package_root is not None:
                patch.setattr(checkpoint, "PACKAGE_ROOT", package_root)
            train_strategy(
                "scratch", params, tmp_path / "out" / "scratch", resume=True,
                checkpoint_dir=tmp_path / "checkpoints" / "scratch", splits_dir=splits,
                decoded_dir=decoded_dir, on_epoch_end=_crash_after(0, seen),
            )  # fmt: skip
        return seen

    with caplog.at_level(logging.INFO, logger="petsml.training"):
        assert interrupted_then(decoded) == [2]
        assert "resuming after epoch 1" in caplog.text
        caplog.clear()
        assert interrupted_then(decoded, package_root=edited) == [1, 2]
        assert "starting fresh" in caplog.text
        caplog.clear()
        assert interrupted_then(changed_photo) == [1, 2]
        assert "starting fresh" in caplog.text


def test_early_stopping_stops_on_stalled_val_accuracy_and_keeps_the_best_weights(
    data_dirs, tmp_path, monkeypatch
):
    scripted = iter([0.25, 0.5, 0.5, 0.4, 0.9, 0.9])
    real_evaluate = finetune.evaluate

    def evaluate(*args, **kwargs):
        loss, _ = real_evaluate(*args, **kwargs)
        return loss, next(scripted)

    monkeypatch.setattr(finetune, "evaluate", evaluate)
    snapshots: dict[int, dict[str, torch.Tensor]] = {}

    def keep(epoch, model, record):
        snapshots[epoch] = _clone(model)

    params = _params(**{"train.epochs": 6, "train.patience": 2})
    summary, out = _run(data_dirs, tmp_path, "scratch", params, on_epoch_end=keep)
    assert sorted(snapshots) == [1, 2, 3, 4]
    assert summary["epochs_run"] == 4 and summary["stopped_early"] is True
    assert summary["best_epoch"] == 2 and summary["val_accuracy"] == pytest.approx(0.5)
    assert [r["epoch"] for r in read_json(out / "history.json")["epochs"]] == [1, 2, 3, 4]
    saved = _clone(load_classifier(out / "model.pt")[0])
    assert _same(saved, snapshots[2]) and not _same(saved, snapshots[4])


# --------------------------------------------------------------------------------------------
# The cached finetune_top path (petsml.training.cached_top)


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
