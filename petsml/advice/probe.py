"""The subsamples the advice measures on, and the one frozen pass it may still need.

Every measurement reads the featurize stage's cached features (:mod:`petsml.data.feature_file`):
the heads are the strategies' own (:mod:`petsml.models.heads`), fitted on a seeded per-class
subsample of the train split and scored on the validation split. Only a candidate backbone
other than ``model.backbone`` (``advise.backbones``) needs a forward pass of its own, over the
subsample alone (:func:`penultimate_features`).
"""

from __future__ import annotations

import math

import numpy as np


def per_class_subset(labels: np.ndarray, cap: int | None, seed: int) -> np.ndarray:
    """Row indices of at most ``cap`` rows per class (all when ``cap`` is None), drawn with
    ``seed``, in row order."""
    rng = np.random.default_rng(seed)
    keep = []
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        keep.append(rng.permutation(rows)[:cap] if cap is not None else rows)
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


def penultimate_features(backbone, images, image_ids: list[str], batch_size: int, device,
                         precision: str = "auto") -> np.ndarray:  # fmt: skip
    """Pooled penultimate features of a candidate backbone (one pass over ``image_ids``)."""
    import torch

    from petsml.data.prefetch import input_batches
    from petsml.models.precision import autocast, use_bf16

    backbone = backbone.fuse_().to(device, memory_format=torch.channels_last)
    bf16 = use_bf16(device, precision)
    out = []
    network = f"frozen {backbone.name}"
    with torch.inference_mode():
        for x in input_batches(images, image_ids, batch_size, device, backbone.preprocessing,
                               "advise", network):  # fmt: skip
            with autocast(device, bf16):
                out.append(backbone.forward_features(x).float().cpu().numpy())
    return np.concatenate(out)


def candidate_features(params, images, device):
    """The frozen pass for ``advise.backbones``: ``(name, train_ids, val_ids)`` -> (train, val)
    penultimate features of those photos, or the reason the candidate was skipped."""
    from petsml.data.tensors import inference_batch_size
    from petsml.models.backbones import BackboneError, WeightsUnavailableError, create_backbone

    def features(name: str, train_ids: list[str], val_ids: list[str]):
        try:
            backbone = create_backbone(name, pretrained=params.model.pretrained,
                                       image_size=params.model.image_size)  # fmt: skip
        except (BackboneError, WeightsUnavailableError) as error:
            return str(error)
        needs = int(backbone.preprocessing.input_size)
        if needs > images.size:  # e.g. Lite2 (260 px) on the default 256 px cache
            return (f"needs {needs} px input, the decoded cache holds {images.size} px: raise "
                    "decode.size or set model.image_size to rank it")  # fmt: skip
        x = penultimate_features(
            backbone,
            images,
            train_ids + val_ids,
            inference_batch_size(params.features.batch_size, device),
            device,
            params.model.precision,
        )
        return x[: len(train_ids)], x[len(train_ids) :]

    return features
