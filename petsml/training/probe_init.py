"""Start fine-tuning from a linear probe's head instead of a random one (LP-FT).

A random head sends large, random gradients into pretrained blocks during the first epochs and
distorts the features before the head is any good (Kumar et al., "Fine-Tuning can Distort
Pretrained Features and Underperform Out-of-Distribution", ICLR 2022). Fitting the head first on
the frozen penultimate features (logistic regression, C picked on validation, as
``feature_extractor`` does) and fine-tuning from there costs one pass of the network's features
and starts training where the probe ends.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch

from petsml.models.classifier import Classifier
from petsml.models.heads import fit_logistic, pad_classes
from petsml.models.precision import autocast, use_bf16

log = logging.getLogger(__name__)


@torch.inference_mode()
def pooled_features(
    features: Callable[[torch.Tensor], torch.Tensor],
    inputs: Iterable[torch.Tensor],
    device: torch.device,
    precision: str = "auto",
) -> np.ndarray:
    """Stack ``features(x)`` (pooled penultimate vectors) over input batches as float32."""
    bf16 = use_bf16(device, precision)
    out = []
    for x in inputs:
        with autocast(device, bf16):
            out.append(features(x).float().cpu().numpy())
    return np.concatenate(out) if out else np.empty((0, 0), np.float32)


def init_head_from_probe(
    model: Classifier,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    Cs: Sequence[float],
) -> float:
    """Fit a logistic-regression probe on (features, labels) and copy it into ``model.head``.

    Returns the probe's validation accuracy.
    """
    started = time.perf_counter()
    fit = fit_logistic(train[0], train[1], val[0], val[1], Cs)
    W, b = pad_classes(fit.W, fit.b, model.head.out_features)
    with torch.no_grad():
        model.head.weight.copy_(torch.as_tensor(W, dtype=model.head.weight.dtype))
        model.head.bias.copy_(torch.as_tensor(b, dtype=model.head.bias.dtype))
    log.info(
        "head initialised from a linear probe: C=%s, val accuracy %.4f (%.1fs)",
        fit.C,
        fit.val_accuracy,
        time.perf_counter() - started,
    )
    return float(fit.val_accuracy)
