"""bf16 against fp32 on this machine: speed and accuracy of what ``model.precision`` switches.

For each precision: images/s of frozen feature extraction (the featurize stage) and of a
``finetune_top`` run (the train stage, its one-off frozen-block cache included; speeds are the
best of interleaved repeats, so a shared machine's load hits both precisions alike), the probe's
validation accuracy on those features and the ``finetune_top`` run's, on the real photos, over
repeated seeded train/val splits. A header names the CPU, its flags and the threads; one line per
precision names it and the memory format (``benchmarks/machine.py``), then a ``pick:`` line says
what ``auto`` picks here and whether that is the faster one at equal accuracy.

    python -m benchmarks.precision [FOLDER] [--splits 3] [--epochs 3]

FOLDER defaults to ../shared/pets-sample.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from benchmarks.machine import header, tag
from benchmarks.photos import photo_frame
from petsml.config import Params, load_params
from petsml.data.decode import DecodedImages, decode_images
from petsml.models.backbones import create_backbone
from petsml.models.heads import fit_logistic
from petsml.models.precision import cpu_has_native_bf16, use_bf16
from petsml.training.features import extract_features
from petsml.training.finetune import train_strategy

ROOT = Path(__file__).resolve().parents[1]
PRECISIONS = ("fp32", "bf16")


def with_precision(params: Params, precision: str, epochs: int) -> Params:
    """``params`` (frozen) with ``model.precision``, ``train.epochs`` and the CPU set."""
    model = params.model.model_copy(update={"precision": precision})
    train = params.train.model_copy(update={"epochs": epochs, "device": "cpu"})
    return params.model_copy(update={"model": model, "train": train})


def seeded_splits(frame: pd.DataFrame, n: int) -> list[np.ndarray]:
    """``n`` random 2:1 train/val masks (True = val), one seed each."""
    return [np.random.default_rng(seed).random(len(frame)) < 1 / 3 for seed in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", nargs="?", default=str(ROOT.parent / "shared" / "pets-sample"))
    parser.add_argument("--splits", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2, help="feature-extraction timings")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    params = load_params(ROOT / "params.yaml")
    frame = photo_frame(Path(args.folder))
    cpu = torch.device("cpu")
    print(header())
    print(
        f"{len(frame)} photos from {args.folder}; {args.splits} seeded 2:1 splits; backbone "
        f"{params.model.backbone}"
    )
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        decode_images(frame, args.folder, tmp / "decoded", size=params.decode.size, workers=2)
        decoded = DecodedImages.open(tmp / "decoded")
        ids = frame["image_id"].tolist()
        labels = frame["class_id"].to_numpy()
        masks = seeded_splits(frame, args.splits)
        # Interleaved (fp32, bf16, fp32, ...) and the best repeat kept, so load from other
        # processes on a shared machine does not land on one precision only.
        torch.manual_seed(0)
        backbone = create_backbone(params.model.backbone, pretrained=params.model.pretrained)
        feat_speed = dict.fromkeys(PRECISIONS, 0.0)
        feats = {}
        for _ in range(args.repeats):
            for precision in PRECISIONS:
                extract_features(backbone, decoded, ids[:16], 16, cpu, precision=precision)
                started = time.perf_counter()
                feats[precision] = extract_features(
                    backbone, decoded, ids, 16, cpu, precision=precision
                ).penultimate
                speed = len(ids) / (time.perf_counter() - started)
                feat_speed[precision] = max(feat_speed[precision], speed)
        probe_acc = {
            p: [
                fit_logistic(
                    feats[p][~m], labels[~m], feats[p][m], labels[m], params.feature_extractor.C
                ).val_accuracy
                for m in masks
            ]
            for p in PRECISIONS
        }
        ft_speed: dict[str, list[float]] = {p: [] for p in PRECISIONS}
        ft_acc: dict[str, list[float]] = {p: [] for p in PRECISIONS}
        for i, mask in enumerate(masks):
            splits = tmp / f"splits{i}"
            splits.mkdir(exist_ok=True)
            frame[~mask].to_csv(splits / "train.csv", index=False)
            frame[mask].to_csv(splits / "val.csv", index=False)
            for precision in PRECISIONS:
                summary = train_strategy(
                    "finetune_top", with_precision(params, precision, args.epochs),
                    tmp / f"model-{precision}-{i}", checkpoint_dir=tmp / "checkpoints",
                    splits_dir=splits, decoded_dir=tmp / "decoded",
                )  # fmt: skip
                seen = int((~mask).sum()) * summary["epochs_run"]
                ft_speed[precision].append(seen / summary["train_seconds"])
                ft_acc[precision].append(summary["val_accuracy"])
        for precision in PRECISIONS:
            results[precision] = {
                "features": feat_speed[precision],
                "probe": float(np.mean(probe_acc[precision])),
                "finetune": float(np.max(ft_speed[precision])),
                "finetune_acc": float(np.mean(ft_acc[precision])),
            }
            r = results[precision]
            probes = " ".join(f"{a:.3f}" for a in probe_acc[precision])
            print(
                f"{tag(precision == 'bf16', torch.channels_last)} features "
                f"{r['features']:.1f} img/s, probe val acc {r['probe']:.3f} ({probes}) | "
                f"finetune_top {r['finetune']:.1f} img/s, val acc {r['finetune_acc']:.3f} "
                f"({' '.join(f'{a:.3f}' for a in ft_acc[precision])})",
                flush=True,
            )
    auto = "bf16" if use_bf16(cpu, "auto") else "fp32"
    bf, fp = results["bf16"], results["fp32"]
    fast = max(PRECISIONS, key=lambda p: results[p]["finetune"] + results[p]["features"])
    print(
        f"pick: auto -> {auto} here (native bf16: {cpu_has_native_bf16()}); faster: {fast} "
        f"(bf16/fp32: features x{bf['features'] / fp['features']:.2f}, "
        f"finetune_top x{bf['finetune'] / fp['finetune']:.2f}); "
        f"accuracy bf16-fp32: probe {bf['probe'] - fp['probe']:+.3f}, "
        f"finetune_top {bf['finetune_acc'] - fp['finetune_acc']:+.3f}"
    )


if __name__ == "__main__":
    main()
