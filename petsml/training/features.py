"""Frozen-backbone features, computed once per image and cached as a stage output.

A frozen trunk gives the same output every epoch, so the feature strategies (linear probe,
SVM on an earlier block) read these arrays instead of running the network again, and both
feature sets come from one forward pass.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch

from petsml.data.decode import DecodedImages
from petsml.data.feature_file import write_features
from petsml.data.prefetch import input_batches
from petsml.data.tensors import pick_device
from petsml.io import atomic_dir
from petsml.models.precision import autocast, use_bf16

log = logging.getLogger(__name__)


@torch.inference_mode()
def extract_features(
    backbone: torch.nn.Module,
    images: DecodedImages,
    image_ids: list[str],
    batch_size: int = 64,
    device: torch.device | None = None,
    desc: str = "features",
    precision: str = "auto",
) -> dict[str, np.ndarray]:
    """Penultimate and early-block pooled features for ``image_ids``, in order."""
    device = device or pick_device()
    backbone = backbone.eval().to(device, memory_format=torch.channels_last)
    prep = backbone.preprocessing
    bf16 = use_bf16(device, precision)
    penultimate, early = [], []
    for x in input_batches(images, image_ids, batch_size, device, prep, desc):
        with autocast(device, bf16):
            pen, ear = backbone.forward_both(x)
        penultimate.append(pen.float().cpu().numpy())
        early.append(ear.float().cpu().numpy())
    return {
        "penultimate": np.concatenate(penultimate) if penultimate else np.empty((0, 0), np.float32),
        "early": np.concatenate(early) if early else np.empty((0, 0), np.float32),
        "image_id": np.asarray(image_ids),
    }


def featurize_splits(
    backbone: torch.nn.Module,
    images: DecodedImages,
    split_ids: dict[str, list[str]],
    out_dir: str | Path,
    batch_size: int,
    device: torch.device | None = None,
    precision: str = "auto",
) -> dict[str, float]:
    """Write ``<split>.npz`` for every split atomically; returns images/s per split."""
    speeds = {}
    with atomic_dir(out_dir) as tmp:
        for name, ids in split_ids.items():
            started = time.perf_counter()
            arrays = extract_features(
                backbone, images, ids, batch_size, device, desc=name, precision=precision
            )
            seconds = time.perf_counter() - started
            speeds[name] = len(ids) / max(seconds, 1e-9)
            write_features(tmp, name, arrays)
            log.info("%s: %d images, %.1f images/s", name, len(ids), speeds[name])
    return speeds
