"""Cutting a backbone into the frozen blocks and the trainable top, for ``finetune_top``.

:func:`split_backbone` cuts a :class:`~petsml.models.backbones.Backbone` into
``frozen_part(x)`` (the frozen blocks) and ``top_part(h)`` (the trainable blocks + pooling), with
``top_part(frozen_part(x)) == forward_features(x)`` (checked on a probe input: a backbone whose
steps do not compose so is not cut). :mod:`petsml.training.cached_top` caches the frozen part's
outputs once and trains the top on them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import torch
from torch import nn

from petsml.models.backbones import Backbone

log = logging.getLogger(__name__)


class TopSplit:
    """A backbone cut at a block boundary: ``frozen_part`` then ``top_part``.

    ``bottom`` and ``top`` are the backbone's own modules (not copies), run in order; ``tail``
    turns the last map into the pooled penultimate vector (it may own parameters only when they
    are trainable).
    """

    def __init__(
        self,
        bottom: Sequence[nn.Module],
        top: Sequence[nn.Module],
        tail: Callable[[torch.Tensor], torch.Tensor],
        tail_module: nn.Module | None = None,
    ) -> None:
        self.bottom = list(bottom)
        self.top = list(top)
        self.tail = tail
        self.tail_module = tail_module

    def frozen_part(self, x: torch.Tensor) -> torch.Tensor:
        for module in self.bottom:
            x = module(x)
        return x

    def top_part(self, h: torch.Tensor) -> torch.Tensor:
        for module in self.top:
            h = module(h)
        return self.tail(h)

    def top_modules(self) -> list[nn.Module]:
        return self.top + ([self.tail_module] if self.tail_module is not None else [])


def _ids(module: nn.Module) -> set[int]:
    return {id(p) for p in module.parameters()}


def split_backbone(
    backbone: Backbone, unfreeze_blocks: int, *, check: bool = True
) -> TopSplit | None:
    """Cut ``backbone`` below its top ``unfreeze_blocks`` blocks; None when it cannot be cut.

    With ``check`` a small probe verifies ``top_part(frozen_part(x)) == forward_features(x)``
    (eval mode) so an unexpected forward (a subclass, a wrapper) falls back instead of training
    a different network.
    """
    steps = backbone.split_steps()
    if steps is None:
        log.info("cached finetune_top: no known split for %s", type(backbone).__name__)
        return None
    modules, tail, tail_module = steps
    blocks = list(backbone.blocks())
    n = len(blocks)
    k = max(0, min(int(unfreeze_blocks), n))
    frozen: set[int] = set()
    for block in blocks[: n - k]:
        frozen |= _ids(block)
    bottom: list[nn.Module] = []
    top: list[nn.Module] = []
    for module in modules:
        ids = _ids(module)
        if not top and ids <= frozen:
            bottom.append(module)
        else:
            top.append(module)
    covered = set().union(*(_ids(m) for m in bottom)) if bottom else set()
    top_ids = set().union(*(_ids(m) for m in top)) if top else set()
    if tail_module is not None:
        top_ids |= _ids(tail_module)
    if not bottom:
        log.info("cached finetune_top: nothing below the top blocks is frozen; nothing to cache")
        return None
    if covered != frozen or top_ids & frozen:
        log.info("cached finetune_top: the block boundary falls inside a module; cannot split")
        return None
    split = TopSplit(bottom, top, tail, tail_module)
    if check and not _agrees(backbone, split):
        log.info("cached finetune_top: split forward differs from forward_features")
        return None
    return split


@torch.no_grad()
def _agrees(backbone: Backbone, split: TopSplit) -> bool:
    modes = [(m, m.training) for m in backbone.modules()]
    backbone.eval()
    try:
        param = next(backbone.parameters())
        size = min(64, backbone.preprocessing.input_size)
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(2, 3, size, size, generator=gen).to(param.device, param.dtype)
        want = backbone.forward_features(x)
        got = split.top_part(split.frozen_part(x))
        return want.shape == got.shape and torch.allclose(want, got, rtol=1e-4, atol=1e-5)
    finally:
        for module, mode in modes:
            module.training = mode


class TopModel(nn.Module):
    """``head(top_part(h))``: logits from cached frozen-part maps. Shares the model's modules."""

    def __init__(self, split: TopSplit, head: nn.Module) -> None:
        super().__init__()
        self.split = split
        self.top = nn.ModuleList(split.top_modules())  # registered so .train()/.eval() reach them
        self.head = head

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.head(self.split.top_part(h))


def split_for(model: nn.Module, unfreeze_blocks: int, backbone_name: str) -> TopSplit | None:
    """The model's backbone cut below its trainable blocks; None (logged) when it cannot be."""
    split = split_backbone(model.backbone, unfreeze_blocks)
    if split is None:
        log.info(
            "finetune_top: backbone %r cannot be split at the frozen blocks; running the "
            "full forward pass every step (no cached frozen outputs)",
            backbone_name,
        )
    return split
