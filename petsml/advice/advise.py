"""Measure the data and the backbones, and answer "which strategy should I ship?".

Everything here runs on a seeded per-class subsample of the train and validation splits of
the decoded cache (``advise.max_train_per_class`` / ``max_val_per_class``), so the stage costs
one frozen forward pass over a few images per class, before any training:

- size: train images per class (min, median) on the whole train split, and a learning curve
  (penultimate-feature probe accuracy at ``advise.fractions`` of the subsample per class);
- similarity: the layer-wise probe curve and, when the backbone carries its ImageNet
  classifier, that classifier's mean max-softmax and normalised entropy on the photos;
- backbones: every candidate ranked by LogME on its frozen penultimate features, beside its
  measured probe accuracy and the Spearman correlation between the two.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy.special import softmax

from petsml.advice.decision import decide, more_data_helps, peak_block
from petsml.advice.logme import logme
from petsml.advice.probe import (
    block_features,
    nested_fractions,
    penultimate_features,
    per_class_subset,
    probe_accuracy,
)
from petsml.config import Params
from petsml.data.decode import DecodedImages
from petsml.errors import PetsError
from petsml.models.backbones import Backbone, BackboneError, WeightsUnavailableError
from petsml.models.backbones import create_backbone as _create
from petsml.models.offline_weights import weights_file

log = logging.getLogger(__name__)

ADVICE_VERSION = 1


class AdviceError(PetsError):
    """The splits cannot support the measurements (e.g. fewer than two classes in train)."""


@dataclass
class Sample:
    """The subsample every measurement uses: ids and labels of train and val rows."""

    train_ids: list[str]
    y_train: np.ndarray
    val_ids: list[str]
    y_val: np.ndarray

    @property
    def ids(self) -> list[str]:
        return self.train_ids + self.val_ids


def draw_sample(train: pd.DataFrame, val: pd.DataFrame, params: Params) -> Sample:
    """At most ``max_*_per_class`` rows per class of each split, seeded by ``advise.seed``."""
    cfg = params.advise
    labels = train["label"].to_numpy()
    if np.unique(labels).size < 2:
        raise AdviceError(
            "data/splits/train.csv holds fewer than two classes; the advise stage needs at "
            "least two to probe anything (check the data and data.task in params.yaml)."
        )
    if val.empty:
        raise AdviceError(
            "data/splits/val.csv is empty; raise split.val_fraction in params.yaml so the "
            "probes have images to be scored on."
        )
    tr = per_class_subset(labels, cfg.max_train_per_class, cfg.seed)
    va = per_class_subset(val["label"].to_numpy(), cfg.max_val_per_class, cfg.seed)
    return Sample(
        train_ids=train["image_id"].iloc[tr].tolist(),
        y_train=labels[tr],
        val_ids=val["image_id"].iloc[va].tolist(),
        y_val=val["label"].to_numpy()[va],
    )


@contextmanager
def _timed(timings: dict[str, float] | None, part: str) -> Iterator[None]:
    """Adds the seconds the block takes to ``timings[part]`` (when timings are kept)."""
    started = time.perf_counter()
    try:
        yield
    finally:
        if timings is not None:
            timings[part] = timings.get(part, 0.0) + time.perf_counter() - started


def size_facts(train: pd.DataFrame) -> dict[str, Any]:
    counts = train["label"].value_counts()
    return {
        "classes": int(counts.size),
        "train_images": int(len(train)),
        "train_per_class_min": int(counts.min()),
        "train_per_class_median": float(counts.median()),
    }


def create_backbone(name: str, params: Params) -> Backbone:
    return _create(
        name,
        pretrained=params.model.pretrained,
        early_block=-1,  # any valid index: the advice reads every block itself
        image_size=params.model.image_size,
    )


def learning_curve(x: np.ndarray, sample: Sample, x_val: np.ndarray, params: Params) -> list:
    cfg = params.advise
    rows = []
    subsets = nested_fractions(sample.y_train, cfg.fractions, cfg.seed)
    for fraction, subset in zip(cfg.fractions, subsets, strict=True):
        accuracy = probe_accuracy(x[subset], sample.y_train[subset], x_val, sample.y_val, cfg.C)
        per_class = np.bincount(np.unique(sample.y_train[subset], return_inverse=True)[1])
        rows.append(
            {
                "fraction": fraction,
                "train_images": int(subset.size),
                "train_per_class": float(np.median(per_class)),
                "val_accuracy": accuracy,
            }
        )
    return rows


def spearman(a: list[float], b: list[float]) -> float | None:
    """Spearman's rank correlation (ties get average ranks); None below 3 points or when
    either side is constant, where a rank correlation says nothing."""
    if len(a) < 3 or len(set(a)) < 2 or len(set(b)) < 2:
        return None
    ranks = pd.DataFrame({"a": a, "b": b}).rank(method="average")
    return float(np.corrcoef(ranks["a"], ranks["b"])[0, 1])


def probe_curve(features, sample: Sample, params: Params) -> list[dict[str, Any]]:
    n_train = len(sample.train_ids)
    rows = []
    for block, (mean, rich) in enumerate(zip(features.mean, features.rich, strict=True)):
        accuracies = {}
        for name, x in (("mean_pool", mean), ("rich_pool", rich)):
            accuracies[name] = probe_accuracy(
                x[:n_train], sample.y_train, x[n_train:], sample.y_val, params.advise.C
            )
        rows.append(
            {
                "block": block,
                "mean_pool_dim": int(mean.shape[1]),
                "rich_pool_dim": int(rich.shape[1]),
                "mean_pool_val_accuracy": accuracies["mean_pool"],
                "rich_pool_val_accuracy": accuracies["rich_pool"],
                "rich_pool_logme": logme(rich[:n_train], sample.y_train),
            }
        )
    return rows


def imagenet_likeness(backbone: Backbone, penultimate: np.ndarray) -> dict[str, Any]:
    """The pretrained ImageNet classifier's confidence on the photos (label-free).

    High mean max-softmax / low entropy: the photos look like ImageNet classes to the network.
    Only offline backbones keep their 1000-class head here (the others are built without it).
    """
    if not backbone.pretrained:
        return {"available": False, "reason": "model.pretrained is false: no ImageNet head"}
    if backbone.library != "offline":
        return {
            "available": False,
            "reason": f"the ImageNet head is read for offline backbones only ({backbone.name})",
        }
    head = imagenet_classifier(backbone.model_name)
    if head is None or head[0].shape[1] != penultimate.shape[1]:
        return {
            "available": False,
            "reason": f"no ImageNet classifier in {backbone.name}'s weights",
        }
    weight, bias = head
    probs = softmax(penultimate.astype(np.float64) @ weight.T + bias, axis=1)
    entropy = -np.sum(probs * np.log(np.clip(probs, 1e-30, None)), axis=1)
    return {
        "available": True,
        "mean_max_softmax": float(probs.max(axis=1).mean()),
        "mean_normalised_entropy": float(entropy.mean() / np.log(probs.shape[1])),
        "images": int(penultimate.shape[0]),
    }


def imagenet_classifier(name: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(weight, bias) of the 1000-class head shipped in an offline backbone's weights file.

    Read straight from the file (its last two tensors, lukemelas' ``_fc``): building the
    network a second time just for its head would cost seconds.
    """
    state = torch.load(weights_file(name), map_location="cpu", weights_only=True)
    state = state.get("state_dict", state)
    head = [state[k] for k in state if k.split(".")[0] in ("_fc", "classifier")]
    if len(head) != 2 or head[0].ndim != 2 or head[0].shape[0] != 1000:
        return None
    return head[0].double().numpy(), head[1].double().numpy()


def _score_backbone(x: np.ndarray, sample: Sample, C: float) -> dict[str, float]:
    n = len(sample.train_ids)
    return {
        "logme": logme(x[:n], sample.y_train),
        "probe_val_accuracy": probe_accuracy(x[:n], sample.y_train, x[n:], sample.y_val, C),
    }


def rank_backbones(
    params: Params,
    images: DecodedImages,
    sample: Sample,
    main_penultimate: np.ndarray,
    device,
    timings: dict[str, float] | None = None,
) -> dict[str, Any]:
    """LogME and probe accuracy of every candidate; ``model.backbone`` is always one of them."""
    names = list(dict.fromkeys([params.model.backbone, *params.advise.backbones]))
    rows, skipped = [], []
    for name in names:
        started = time.perf_counter()
        if name == params.model.backbone:
            x = main_penultimate
        else:
            try:
                with _timed(timings, "backbones: build"):
                    backbone = create_backbone(name, params)
            except (BackboneError, WeightsUnavailableError) as error:
                log.warning("advise: backbone %s skipped: %s", name, error)
                skipped.append({"backbone": name, "reason": str(error)})
                continue
            needs = int(backbone.preprocessing.input_size)
            if needs > images.size:  # e.g. Lite2 (260 px) on the default 256 px cache
                reason = (
                    f"needs {needs} px input, the decoded cache holds {images.size} px: raise "
                    "decode.size or set model.image_size to rank it"
                )
                log.warning("advise: backbone %s skipped: %s", name, reason)
                skipped.append({"backbone": name, "reason": reason})
                continue
            with _timed(timings, "backbones: frozen pass"):
                x = penultimate_features(
                    backbone,
                    images,
                    sample.ids,
                    params.features.batch_size,
                    device,
                    params.model.precision,
                )
        with _timed(timings, "backbones: LogME + probe"):
            row = {"backbone": name, **_score_backbone(x, sample, params.advise.C)}
        rows.append(row)
        log.info("advise: %s %s (%.1fs)", name, row, time.perf_counter() - started)
    rows.sort(key=lambda r: -r["logme"])
    for rank, row in enumerate(rows, 1):
        row["logme_rank"] = rank
    rho = spearman([r["logme"] for r in rows], [r["probe_val_accuracy"] for r in rows])
    return {
        "ranking": rows,
        "skipped": skipped,
        "spearman_rho": rho,
        "spearman_note": None if rho is not None else "needs 3 or more ranked backbones",
    }


def advise(
    params: Params,
    images: DecodedImages,
    train: pd.DataFrame,
    val: pd.DataFrame,
    device: torch.device,
    timings: dict[str, float] | None = None,
) -> dict[str, Any]:
    """The advice as a JSON-ready dict (``reports/advice.json``'s contract); ``timings``, when
    given, receives the seconds each part took (kept out of the JSON: it must reproduce)."""
    cfg = params.advise
    sample = draw_sample(train, val, params)
    with _timed(timings, "build backbone"):
        backbone = create_backbone(params.model.backbone, params)
    log.info(
        "advise: %s on %d train + %d val images (of %d + %d)",
        params.model.backbone,
        len(sample.train_ids),
        len(sample.val_ids),
        len(train),
        len(val),
    )
    with _timed(timings, "block-wise frozen pass"):
        features = block_features(
            backbone,
            images,
            sample.ids,
            params.features.batch_size,
            device,
            params.model.precision,
            cfg.grid,
        )
    n_train = len(sample.train_ids)
    pen = features.penultimate
    with _timed(timings, "probe curve"):
        curve = probe_curve(features, sample, params)
    rich = [row["rich_pool_val_accuracy"] for row in curve]
    mean = [row["mean_pool_val_accuracy"] for row in curve]
    size = size_facts(train)
    decision = decide(
        size["train_per_class_median"], rich, mean, cfg.small_below, cfg.similar_tolerance
    )
    with _timed(timings, "learning curve"):
        lc = learning_curve(pen[:n_train], sample, pen[n_train:], params)
    with _timed(timings, "ImageNet-likeness"):
        imagenet = imagenet_likeness(backbone, pen)
    backbones = rank_backbones(params, images, sample, pen, device, timings)
    similarity = {
        "probe": curve,
        "blocks": len(curve),
        "peak_block": peak_block(rich, cfg.similar_tolerance),
        "best_mean_pool_block": int(np.argmax(mean)),
        # LogME checked where it can be: its ranking of the blocks against their probe accuracy
        "logme_probe_rho": spearman([row["rich_pool_logme"] for row in curve], rich),
        "imagenet": imagenet,
        "verdict": decision.similarity,
    }
    return {
        "version": ADVICE_VERSION,
        "backbone": params.model.backbone,
        "task": params.data.task,
        "cell": decision.cell,
        "strategy": decision.strategy,
        "early_block": decision.early_block,
        "why": decision.why,
        "size": {
            **size,
            "small_below": cfg.small_below,
            "verdict": decision.size,
            "learning_curve": lc,
            "more_data_helps": more_data_helps([r["val_accuracy"] for r in lc], cfg.more_data_gain),
        },
        "similarity": similarity,
        "backbones": backbones,
        "sample": {
            "train_images": n_train,
            "val_images": len(sample.val_ids),
            "seed": cfg.seed,
            "C": cfg.C,
        },
    }
