"""model.precision: bf16 only where the hardware does it natively, unless asked."""

from __future__ import annotations

import pytest
import torch

from petsml.config import ConfigError, parse_params
from petsml.models import precision


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
