"""LP-FT: the fine-tuning head starts as a logistic-regression probe on the frozen features."""

from __future__ import annotations

import numpy as np
import torch

from petsml.models.backbones import create_backbone
from petsml.models.classifier import Classifier
from petsml.training.probe_init import init_head_from_probe, pooled_features


def _blobs(n_per: int, classes: int, dim: int, seed: int):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 4, (classes, dim))
    y = np.repeat(np.arange(classes), n_per)
    return (centres[y] + rng.normal(0, 1, (len(y), dim))).astype(np.float32), y


def test_the_head_becomes_the_probe_and_classifies_the_features():
    torch.manual_seed(0)
    model = Classifier(create_backbone("test_efficientnet", pretrained=False), 37)
    dim = model.in_features
    # Only classes 0-4 have photos: the other 32 stay in the label space, never predicted.
    (xtr, ytr), (xval, yval) = _blobs(12, 5, dim, 0), _blobs(4, 5, dim, 0)
    before = model.head.weight.detach().clone()
    val_acc = init_head_from_probe(model, (xtr, ytr), (xval, yval), [0.1, 1.0])
    assert val_acc >= 0.9
    assert not torch.equal(before, model.head.weight)
    with torch.no_grad():
        logits = model.head(torch.from_numpy(xval))
    assert logits.shape == (len(yval), 37)
    assert (logits.argmax(1).numpy() == yval).mean() >= 0.9


def test_pooled_features_stacks_batches_in_order():
    double = lambda x: x * 2  # noqa: E731
    batches = [torch.ones(2, 3), torch.zeros(1, 3)]
    out = pooled_features(double, batches, torch.device("cpu"), "fp32")
    assert out.dtype == np.float32 and out.shape == (3, 3)
    np.testing.assert_array_equal(out[:, 0], [2, 2, 0])
