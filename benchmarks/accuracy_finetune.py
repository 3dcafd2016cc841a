"""LP-FT for :mod:`benchmarks.accuracy`: ``finetune_top`` with a probe-initialised head on one
seeded split, its learning rate and epochs picked on validation, the pick scored on test with
and without flip TTA. The project's own training code runs it (``train_strategy``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
import yaml

from petsml.config import parse_params
from petsml.data.decode import DecodedImages
from petsml.evaluation.inference import model_logits
from petsml.models.model_dir import read_model_dir
from petsml.training.finetune import train_strategy

if TYPE_CHECKING:
    from benchmarks.accuracy import FeatureSet

CPU = torch.device("cpu")


def accuracy(proba: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of class probabilities ``proba`` against labels ``y``."""
    return float((proba.argmax(1) == y).mean())


def finetune_params(base: dict, fs: FeatureSet, args, lr: float, epochs: int):
    raw = yaml.safe_load(yaml.safe_dump(base))
    raw["model"].update(backbone=fs.name, pretrained=not args.random_init)
    raw["model"]["image_size"] = args.image_size
    raw["decode"]["size"] = fs.decode_size
    raw["data"]["task"] = "breed"
    raw["train"].update(epochs=epochs, device="cpu", batch_size=args.finetune_batch_size)
    raw["finetune_top"].update(lr=lr, head_init="probe")
    if "tta" in raw["train"]:  # the model's own TTA (train.tta): off, this script mirrors itself
        raw["train"]["tta"] = "none"
    return parse_params(raw)


def run_finetune(
    fs: FeatureSet, frame: pd.DataFrame, y: np.ndarray, split, args, tmp: Path, base: dict
) -> tuple[float, float, float, str]:
    """LP-FT on one split: every (lr, epochs) of the grid, the one best on val scored on test.

    Returns (val acc, test acc, test acc with flip TTA, the picked setting)."""
    tr, va, te = split
    splits_dir = tmp / "splits"
    splits_dir.mkdir(parents=True, exist_ok=True)
    columns = ["image_id", "file", "breed", "class_id", "species", "species_id", "sha256"]
    frame.iloc[tr][columns].to_csv(splits_dir / "train.csv", index=False)
    frame.iloc[va][columns].to_csv(splits_dir / "val.csv", index=False)
    best = None
    for lr in args.finetune_lrs:
        for epochs in args.finetune_epochs:
            out = tmp / f"model_{lr:g}_{epochs}"
            params = finetune_params(base, fs, args, lr, epochs)
            summary = train_strategy(
                "finetune_top", params, out, checkpoint_dir=tmp / "ckpt",
                splits_dir=splits_dir, decoded_dir=fs.decoded_dir,
            )  # fmt: skip
            val = float(summary["val_accuracy"])
            print(
                f"    lr {lr:g} epochs {epochs}: val {val:.3f} (best epoch "
                f"{summary['best_epoch']}, {summary['train_seconds']:.0f} s)",
                flush=True,
            )
            if best is None or val > best[0]:  # ties: the earlier, cheaper setting
                best = (val, out, f"lr {lr:g}, {epochs} epochs, best epoch {summary['best_epoch']}")
    val, out, picked = best
    model = read_model_dir(out).model
    decoded = DecodedImages.open(fs.decoded_dir)
    mirrored = DecodedImages(np.ascontiguousarray(decoded.array[:, :, ::-1]), decoded.rows)
    test_ids = frame.image_id.iloc[te].tolist()
    logits = model_logits(model, decoded, test_ids, args.batch_size, CPU)
    mirror_logits = model_logits(model, mirrored, test_ids, args.batch_size, CPU)
    proba = torch.softmax(torch.from_numpy(logits), 1).numpy()
    proba_m = torch.softmax(torch.from_numpy(mirror_logits), 1).numpy()
    return val, accuracy(proba, y[te]), accuracy((proba + proba_m) / 2, y[te]), picked
