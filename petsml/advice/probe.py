"""Pooled features of every block in one pass, and the linear probes read on them.

A linear probe (standardised features, logistic regression, one fixed ``C``) is the cheapest
honest measure of what a representation knows about the labels: its validation accuracy per
block is the layer-wise probe curve, and on growing subsets of the train images it is the
learning curve.

Every block's output is pooled two ways: the channel mean (what ``svm_early`` is fitted on,
so it picks svm_early's block) and "rich" pooling - channel mean, channel std and a small
``grid x grid`` spatial average - because the plain mean throws away the spatial layout
that early blocks carry and would make them look worse than they are.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from petsml.data.decode import DecodedImages
from petsml.data.prefetch import input_batches
from petsml.models.backbones import Backbone, SequentialBackbone, TimmBackbone
from petsml.models.base import pool as mean_pool  # what svm_early pools: the same function
from petsml.models.precision import autocast, use_bf16

log = logging.getLogger(__name__)

MAX_ITER = 500
# As in petsml.training.heads: single-threaded BLAS is faster for these small problems on a
# shared CPU, and keeps the result independent of the machine's core count.
BLAS_THREADS = 1


@dataclass
class BlockFeatures:
    """Per-block pooled features (list index = block) and the penultimate vectors, row-aligned."""

    mean: list[np.ndarray]
    rich: list[np.ndarray]
    penultimate: np.ndarray


def block_outputs(backbone: Backbone, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """(output of each of ``backbone.blocks()``, pooled penultimate) from one forward pass.

    Block ``i``'s output is what ``create_backbone(..., early_block=i).forward_early`` pools
    (tests/test_advise.py checks it block by block); the last block of a network whose head
    has parameters is the penultimate vector itself.
    """
    if isinstance(backbone, TimmBackbone):
        levels = backbone._levels  # block -> feature_info level (None: the head block)
        wanted = [level for level in levels if level is not None]
        final, inter = backbone.model.forward_intermediates(x, indices=wanted)
        penultimate = backbone.model.forward_head(final, pre_logits=True)
        by_level = dict(zip(wanted, inter, strict=True))
        return [penultimate if lv is None else by_level[lv] for lv in levels], penultimate
    if isinstance(backbone, SequentialBackbone):
        outs = []
        for stage in backbone.stages:
            x = stage(x)
            outs.append(x)
        penultimate = backbone.head(x)
        if backbone._head_is_block:
            outs.append(penultimate)
        return outs, penultimate
    raise TypeError(f"no block walk for {type(backbone).__name__}")


def rich_pool(t: torch.Tensor, grid: int) -> torch.Tensor:
    """Channel mean, channel std and a ``grid x grid`` average map, concatenated."""
    if t.ndim == 4:
        t = t.float()
        spatial = F.adaptive_avg_pool2d(t, min(grid, t.shape[2], t.shape[3])).flatten(1)
        return torch.cat([t.mean(dim=(2, 3)), t.std(dim=(2, 3), correction=0), spatial], 1)
    if t.ndim == 3:
        t = t.float()
        return torch.cat([t.mean(dim=1), t.std(dim=1, correction=0)], 1)
    return t.flatten(1)


@torch.inference_mode()
def block_features(
    backbone: Backbone,
    images: DecodedImages,
    image_ids: list[str],
    batch_size: int,
    device: torch.device,
    precision: str = "auto",
    grid: int = 2,
) -> BlockFeatures:
    """Both poolings of every block, plus the penultimate vectors, for ``image_ids`` in order."""
    backbone = backbone.eval().to(device, memory_format=torch.channels_last)
    bf16 = use_bf16(device, precision)
    means: list[list[np.ndarray]] = []
    riches: list[list[np.ndarray]] = []
    pens = []
    for x in input_batches(images, image_ids, batch_size, device, backbone.preprocessing, "advise"):
        with autocast(device, bf16):
            outs, pen = block_outputs(backbone, x)
        if not means:
            means, riches = [[] for _ in outs], [[] for _ in outs]
        for i, out in enumerate(outs):
            means[i].append(mean_pool(out).float().cpu().numpy())
            riches[i].append(rich_pool(out, grid).float().cpu().numpy())
        pens.append(pen.float().cpu().numpy())
    return BlockFeatures(
        mean=[np.concatenate(parts) for parts in means],
        rich=[np.concatenate(parts) for parts in riches],
        penultimate=np.concatenate(pens),
    )


@torch.inference_mode()
def penultimate_features(
    backbone: Backbone,
    images: DecodedImages,
    image_ids: list[str],
    batch_size: int,
    device: torch.device,
    precision: str = "auto",
) -> np.ndarray:
    """Pooled penultimate features only (the backbone ranking needs nothing else)."""
    backbone = backbone.eval().to(device, memory_format=torch.channels_last)
    bf16 = use_bf16(device, precision)
    out = []
    for x in input_batches(images, image_ids, batch_size, device, backbone.preprocessing, "advise"):
        with autocast(device, bf16):
            out.append(backbone.forward_features(x).float().cpu().numpy())
    return np.concatenate(out)


def probe_accuracy(
    x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, C: float
) -> float:
    """Validation accuracy of a logistic-regression probe on standardised features."""
    classes = np.unique(y_train)
    if classes.size < 2:  # nothing to fit: the probe can only answer the one class it saw
        return float(np.mean(y_val == classes[0])) if classes.size else 0.0
    scaler = StandardScaler().fit(x_train)
    model = LogisticRegression(C=C, max_iter=MAX_ITER)
    with threadpool_limits(BLAS_THREADS), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        # one image per class is a legitimate learning-curve point, not a regression problem
        warnings.filterwarnings("ignore", message="The number of unique classes")
        model.fit(scaler.transform(x_train), y_train)
        predicted = model.predict(scaler.transform(x_val))
    return float(np.mean(predicted == y_val))


def per_class_subset(labels: np.ndarray, cap: int, seed: int) -> np.ndarray:
    """Row indices of at most ``cap`` rows per class, drawn with ``seed``, in row order."""
    rng = np.random.default_rng(seed)
    keep = []
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        keep.append(rng.permutation(rows)[:cap])
    return np.sort(np.concatenate(keep)) if keep else np.empty(0, dtype=np.int64)


def nested_fractions(labels: np.ndarray, fractions: list[float], seed: int) -> list[np.ndarray]:
    """For each fraction, ``ceil(fraction * n_class)`` (at least 1) rows of every class.

    The subsets are nested (each is the start of one seeded permutation per class), so the
    learning curve shows what adding images does, not what drawing other images does.
    """
    rng = np.random.default_rng(seed)
    orders = {k: rng.permutation(np.flatnonzero(labels == k)) for k in np.unique(labels)}
    subsets = []
    for fraction in fractions:
        parts = [rows[: max(1, math.ceil(fraction * rows.size - 1e-9))] for rows in orders.values()]
        subsets.append(np.sort(np.concatenate(parts)))
    return subsets
