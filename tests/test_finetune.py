"""The trained strategies, really trained: a tiny random-init timm network on tiny images."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from petsml.io import read_json
from petsml.models.classifier import load_classifier
from petsml.training import checkpoint, finetune
from petsml.training.checkpoint import CHECKPOINT
from petsml.training.finetune import train_strategy
from petsml.training.loop import lr_factor
from petsml.training.param_groups import build_model, build_param_groups
from tests.finetune_data import (
    BACKBONE,
    NUM_CLASSES,
    REPO,
    Crash,
    _clone,
    _crash_after,
    _params,
    _run,
    _same,
)

# data_dirs and one_thread: fixtures of tests/finetune_data.py (a plugin of tests/conftest.py)
pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_thread")]


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
