"""model.precision: bf16 only where the hardware does it natively, unless asked."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from petsml.config import ConfigError, parse_params
from petsml.data.tensors import to_input
from petsml.models import precision
from petsml.models.backbones import create_backbone
from petsml.models.heads import fit_logistic
from petsml.testing.fakedata import class_image
from petsml.training.probe_init import pooled_features

# bf16 keeps 8 bits of mantissa (~0.4% per rounding); through a 16-block network the pooled
# features move by a few percent (measured on this test's photos: median 0.022, max 0.037).
TOLERANCE_MEDIAN = 0.05
TOLERANCE_MAX = 0.15


def test_explicit_precision_wins():
    cpu = torch.device("cpu")
    assert precision.use_bf16(cpu, "bf16") is True
    assert precision.use_bf16(cpu, "fp32") is False


def test_auto_follows_the_cpu_flags(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    assert precision.use_bf16(cpu) is False
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert precision.use_bf16(cpu) is True
    assert precision.use_bf16(torch.device("mps")) is False


def test_autocast_really_runs_in_bf16_when_on():
    layer = torch.nn.Linear(4, 4)
    with precision.autocast(torch.device("cpu"), True):
        assert layer(torch.ones(1, 4)).dtype == torch.bfloat16
    with precision.autocast(torch.device("cpu"), False):
        assert layer(torch.ones(1, 4)).dtype == torch.float32


def test_unknown_precision_is_refused_with_the_key():
    with pytest.raises(ValueError, match="model.precision"):
        precision.use_bf16(torch.device("cpu"), "fp16")
    with pytest.raises(ConfigError, match="model.precision"):
        parse_params({"model": {"precision": "fp16"}})


@pytest.mark.integration  # bf16 is emulated (seconds) on CPUs without avx512_bf16
def test_bf16_features_stay_close_to_fp32_and_a_probe_predicts_the_same():
    """The bf16 path's tolerance: pretrained Lite0 features of generated photos, bf16 autocast
    against fp32 (emulated where the CPU lacks bf16 instructions: slower, same numbers)."""
    cpu = torch.device("cpu")
    backbone = create_backbone("efficientnet_lite0", pretrained=True, image_size=96).eval()
    prep = backbone.preprocessing
    rng = np.random.default_rng(0)
    classes, per_class = 8, 8
    labels = np.repeat(np.arange(classes), per_class)
    photos = np.stack([np.asarray(class_image(int(c), rng, (96, 96))) for c in labels])
    x = to_input(torch.from_numpy(photos), prep.mean, prep.std, size=prep.input_size)
    batches = list(x.split(32))
    fp32 = pooled_features(backbone.forward_features, batches, cpu, "fp32")
    bf16 = pooled_features(backbone.forward_features, batches, cpu, "bf16")

    relative = np.linalg.norm(bf16 - fp32, axis=1) / np.linalg.norm(fp32, axis=1)
    assert np.median(relative) < TOLERANCE_MEDIAN and relative.max() < TOLERANCE_MAX, relative
    train = np.arange(len(labels)) % per_class < per_class // 2
    fit = fit_logistic(fp32[train], labels[train], fp32[~train], labels[~train], [0.1])
    agree = (fit.predict(bf16) == fit.predict(fp32)).mean()
    assert agree >= 0.9, agree
