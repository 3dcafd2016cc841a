"""EfficientNet-Lite0/1/2 in plain torch: the offline backbones, built without importing timm.

Importing timm costs ~6.5 s per process on a 2-core CPU (it imports torchvision, which imports
torch's compiler stack); every stage that builds the default backbone paid it. This module is
the same network as timm's ``tf_efficientnet_lite<N>`` - the same blocks, TF "same" padding,
BatchNorm eps 1e-3, ReLU6, the same parameter names - and answers the part of timm's API the
project uses (``feature_info``, ``forward_features``, ``forward_intermediates``,
``forward_head``), so :class:`~petsml.models.timm_backbones.TimmBackbone` wraps either, and a
state dict of one loads into the other (``tests/test_efficientnet_lite.py`` checks outputs equal
timm's for every variant).

:meth:`LiteNet.fuse_` makes the inference form: each BatchNorm folded into the convolution
before it. BatchNorm was a third of a CPU forward pass; the fused network runs ~1.6x faster and
differs from the unfused one by float rounding only (~1e-6 relative). Every pass that serves or
evaluates a model (featurize, evaluate, the pyfunc, the web page) runs the fused form, so what is
evaluated is what ships; training runs the unfused one.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

BN_EPS = 1e-3  # TensorFlow's default, which the ported weights were trained with
STEM = 32  # fixed for the Lite family (not scaled)
HEAD = 1280  # fixed too

# (repeats, kernel, stride, expansion, channels) of each stage, before scaling; the first stage
# is a depthwise-separable block, the others inverted residuals (timm's arch_def for Lite).
STAGES = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)
FEATURE_STAGES = (0, 1, 2, 4, 6)  # the stages ending at each stride (2, 4, 8, 16, 32)

# name -> (channel multiplier, depth multiplier); each one's input size is in the catalog
VARIANTS = {
    "efficientnet_lite0": (1.0, 1.0),
    "efficientnet_lite1": (1.0, 1.1),
    "efficientnet_lite2": (1.1, 1.2),
}


def make_divisible(value: float, divisor: int = 8, round_limit: float = 0.9) -> int:
    """Nearest multiple of ``divisor``, never below ``round_limit`` of ``value`` (timm's rule)."""
    out = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return out + divisor if out < round_limit * value else out


@dataclass(frozen=True)
class StageSpec:
    repeats: int
    kernel: int
    stride: int
    expansion: int
    channels: int


def stage_specs(channel_mult: float, depth_mult: float) -> list[StageSpec]:
    """Scaled stages: channels rounded to multiples of 8, repeats rounded up; the first and last
    stage keep their repeats (EfficientNet-Lite's ``fix_first_last``)."""
    specs = []
    last = len(STAGES) - 1
    for i, (repeats, kernel, stride, expansion, channels) in enumerate(STAGES):
        scaled = repeats if i in (0, last) else int(math.ceil(repeats * depth_mult))
        specs.append(StageSpec(scaled, kernel, stride, expansion,
                               make_divisible(channels * channel_mult)))  # fmt: skip
    return specs


class SameConv2d(nn.Conv2d):
    """TensorFlow "same" padding for a strided convolution: the extra row and column go at the
    bottom and right. Stride-1 convolutions get symmetric padding from ``nn.Conv2d`` itself."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in zip(x.shape[-1:-3:-1], self.kernel_size[::-1], self.stride[::-1],
                              strict=True):  # fmt: skip
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads))


def conv(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    if stride == 1:
        return nn.Conv2d(cin, cout, kernel, 1, (kernel - 1) // 2, groups=groups, bias=False)
    return SameConv2d(cin, cout, kernel, stride, 0, groups=groups, bias=False)


class BatchNormAct(nn.BatchNorm2d):
    """BatchNorm then an optional ReLU6, one module (timm's ``BatchNormAct2d`` state dict)."""

    def __init__(self, channels: int, act: bool = True) -> None:
        super().__init__(channels, eps=BN_EPS)
        self.act = nn.ReLU6(inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(super().forward(x))


class DepthwiseSeparable(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.conv_dw = conv(cin, cin, kernel, stride, groups=cin)
        self.bn1 = BatchNormAct(cin)
        self.conv_pw = conv(cin, cout, 1)
        self.bn2 = BatchNormAct(cout, act=False)
        self.has_skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv_pw(self.bn1(self.conv_dw(x))))
        return out + x if self.has_skip else out


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expansion: int) -> None:
        super().__init__()
        mid = make_divisible(cin * expansion)
        self.conv_pw = conv(cin, mid, 1)
        self.bn1 = BatchNormAct(mid)
        self.conv_dw = conv(mid, mid, kernel, stride, groups=mid)
        self.bn2 = BatchNormAct(mid)
        self.conv_pwl = conv(mid, cout, 1)
        self.bn3 = BatchNormAct(cout, act=False)
        self.has_skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn1(self.conv_pw(x))
        out = self.bn2(self.conv_dw(out))
        out = self.bn3(self.conv_pwl(out))
        return out + x if self.has_skip else out


# (conv, norm) attribute pairs folded by LiteNet.fused, per module type
_PAIRS = {
    DepthwiseSeparable: (("conv_dw", "bn1"), ("conv_pw", "bn2")),
    InvertedResidual: (("conv_pw", "bn1"), ("conv_dw", "bn2"), ("conv_pwl", "bn3")),
}


class LiteNet(nn.Module):
    """EfficientNet-Lite without its classifier: stem, 7 stages of blocks, 1x1 head, pooling."""

    def __init__(self, name: str) -> None:
        super().__init__()
        try:
            channel_mult, depth_mult = VARIANTS[name]
        except KeyError:
            raise ValueError(f"unknown EfficientNet-Lite variant {name!r}") from None
        self.variant = name
        self.conv_stem = conv(3, STEM, 3, 2)
        self.bn1 = BatchNormAct(STEM)
        stages, cin, channels = [], STEM, []
        for i, spec in enumerate(stage_specs(channel_mult, depth_mult)):
            blocks = []
            for j in range(spec.repeats):
                stride = spec.stride if j == 0 else 1
                if i == 0:
                    blocks.append(DepthwiseSeparable(cin, spec.channels, spec.kernel, stride))
                else:
                    blocks.append(InvertedResidual(cin, spec.channels, spec.kernel, stride,
                                                   spec.expansion))  # fmt: skip
                cin = spec.channels
            stages.append(nn.Sequential(*blocks))
            channels.append(cin)
        self.blocks = nn.Sequential(*stages)
        self.conv_head = conv(cin, HEAD, 1)
        self.bn2 = BatchNormAct(HEAD)
        self.num_features = self.head_hidden_size = HEAD
        self.feature_info = [
            {"module": f"blocks.{i}", "num_chs": channels[i], "reduction": 2 ** (k + 1)}
            for k, i in enumerate(FEATURE_STAGES)
        ]
        self.is_fused = False
        self._init_weights()

    def _init_weights(self) -> None:
        """timm's EfficientNet initialisation (fan-out normal), for model.pretrained: false."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels
                module.weight.data.normal_(0, math.sqrt(2.0 / (fan_out // module.groups)))
            elif isinstance(module, nn.BatchNorm2d):
                module.weight.data.fill_(1.0)
                module.bias.data.zero_()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.bn1(self.conv_stem(x)))
        return self.bn2(self.conv_head(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = True) -> torch.Tensor:
        return x.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: list[int],
        intermediates_only: bool = False,
        stop_early: bool = False,
    ):
        """The outputs of ``feature_info[i]`` for ``i`` in ``indices`` (and, unless
        ``intermediates_only``, the final map): timm's contract, for the indices form only."""
        wanted = {FEATURE_STAGES[i] for i in indices}
        last = max(wanted) if stop_early and intermediates_only else len(self.blocks) - 1
        x = self.bn1(self.conv_stem(x))
        out = []
        for i, stage in enumerate(self.blocks):
            if i > last:
                break
            x = stage(x)
            if i in wanted:
                out.append(x)
        if intermediates_only:
            return out
        return self.bn2(self.conv_head(x)), out

    def step_modules(self) -> list[nn.Module]:
        """``forward_features`` as a chain of modules (the cached frozen trunk splits it)."""
        return [self.conv_stem, self.bn1, *self.blocks, self.conv_head, self.bn2]

    @torch.no_grad()
    def fuse_(self) -> LiteNet:
        """Fold every BatchNorm into its convolution, in place: the inference form (eval only;
        the result cannot be trained or saved as a model file)."""
        if self.is_fused:
            return self
        if self.training:
            raise RuntimeError("fuse an eval-mode network: BatchNorm folds its running statistics")
        _fold(self, "conv_stem", "bn1")
        _fold(self, "conv_head", "bn2")
        for module in self.blocks.modules():
            for conv_name, norm_name in _PAIRS.get(type(module), ()):
                _fold(module, conv_name, norm_name)
        self.is_fused = True
        return self

    def fused(self) -> LiteNet:
        """A fused copy (:meth:`fuse_`); this network stays as it is."""
        return copy.deepcopy(self).eval().fuse_()


def _fold(parent: nn.Module, conv_name: str, norm_name: str) -> None:
    """``conv`` then ``norm`` -> one convolution with a bias, then the norm's activation."""
    layer: nn.Conv2d = getattr(parent, conv_name)
    norm: BatchNormAct = getattr(parent, norm_name)
    scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
    layer.weight.copy_(layer.weight * scale.view(-1, 1, 1, 1))
    layer.bias = nn.Parameter(norm.bias - norm.running_mean * scale)
    setattr(parent, norm_name, norm.act)
