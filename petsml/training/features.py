"""The one frozen pass: every photo through the pretrained backbone once, everything kept.

A frozen trunk gives the same output every time, so one pass per photo (the featurize stage)
writes all that later stages would otherwise recompute (:mod:`petsml.data.feature_file`): the
penultimate vectors (``feature_extractor``, the similar-photo index), the pooled output of every
block (``svm_early`` at any block, the advise stage's probes) and the ImageNet classifier's
reading (advise's label-free similarity). The backbone runs in its inference form
(:meth:`~petsml.models.base.Backbone.fuse_`), as the shipped model does; the test split always
in float32, so a frozen strategy's test logits are its saved head on these rows.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch

from petsml.data.decode import DecodedImages
from petsml.data.feature_file import ANIMAL_CLASSES, SplitFeatures, write_features
from petsml.data.prefetch import input_batches
from petsml.data.tensors import pick_device
from petsml.io import atomic_dir
from petsml.models.base import Backbone, pool
from petsml.models.precision import autocast, use_bf16

log = logging.getLogger(__name__)

EXACT_SPLITS = ("test",)  # always float32: what is evaluated is what ships


def imagenet_stats(logits: torch.Tensor) -> dict[str, np.ndarray]:
    """Per photo: top-1 probability, normalised entropy, top-1 class, animal-class mass."""
    probs = torch.softmax(logits.double(), dim=1)
    entropy = -(probs * probs.clamp_min(1e-30).log()).sum(1) / np.log(probs.shape[1])
    return {
        "max_prob": probs.max(1).values.float().numpy(),
        "entropy": entropy.float().numpy(),
        "top1": probs.argmax(1).numpy().astype(np.int16),
        "animal": probs[:, :ANIMAL_CLASSES].sum(1).float().numpy(),
    }


@torch.inference_mode()
def extract_features(
    backbone: Backbone,
    images: DecodedImages,
    image_ids: list[str],
    batch_size: int = 64,
    device: torch.device | None = None,
    desc: str = "features",
    precision: str = "auto",
    imagenet_head: torch.nn.Module | None = None,
) -> SplitFeatures:
    """Penultimate and every block's pooled output for ``image_ids``, in order, from one pass
    (``backbone`` as given: the featurize stage passes its fused form)."""
    device = device or pick_device()
    backbone = backbone.eval().to(device, memory_format=torch.channels_last)
    bf16 = use_bf16(device, precision)
    pens: list[np.ndarray] = []
    blocks: list[list[np.ndarray]] = []
    heads: list[torch.Tensor] = []
    network = f"frozen {backbone.name}"
    prep = backbone.preprocessing
    for x in input_batches(images, image_ids, batch_size, device, prep, desc, network):
        with autocast(device, bf16):
            outs, pen = backbone.forward_blocks(x)
        pen = pen.float()
        pens.append(pen.cpu().numpy())
        if not blocks:
            blocks = [[] for _ in outs[:-1]]
        for i, out in enumerate(outs[:-1]):  # the last block's output is the penultimate vector
            blocks[i].append(pool(out).float().cpu().numpy())
        if imagenet_head is not None:
            heads.append(imagenet_head.to(device)(pen).cpu())
    dim = backbone.feature_dim
    return SplitFeatures(
        image_id=np.asarray(image_ids),
        penultimate=np.concatenate(pens) if pens else np.empty((0, dim), np.float32),
        blocks=[np.concatenate(parts) for parts in blocks],
        imagenet=imagenet_stats(torch.cat(heads)) if heads else {},
        precision="bf16" if bf16 else "fp32",
        backbone=backbone.name,
        input_size=int(prep.input_size),
    )


def featurize_splits(
    backbone: Backbone,
    images: DecodedImages,
    split_ids: dict[str, list[str]],
    out_dir: str | Path,
    batch_size: int,
    device: torch.device | None = None,
    precision: str = "auto",
    imagenet_head: torch.nn.Module | None = None,
) -> dict[str, float]:
    """Write ``<split>.npz`` for every split atomically; returns images/s per split.

    Train and validation run at ``precision`` (bf16 where the hardware has it natively); the
    test split in float32 (:data:`EXACT_SPLITS`).
    """
    backbone.fuse_()
    speeds = {}
    with atomic_dir(out_dir) as tmp:
        for name, ids in split_ids.items():
            started = time.perf_counter()
            features = extract_features(
                backbone, images, ids, batch_size, device, desc=name,
                precision="fp32" if name in EXACT_SPLITS else precision,
                imagenet_head=imagenet_head,
            )  # fmt: skip
            seconds = time.perf_counter() - started
            speeds[name] = len(ids) / max(seconds, 1e-9)
            write_features(tmp, name, features)
            log.info("%s: %d images, %.1f images/s (%s)", name, len(ids), speeds[name],
                     features.precision)  # fmt: skip
    return speeds
