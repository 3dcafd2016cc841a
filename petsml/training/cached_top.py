"""``finetune_top`` without re-running the frozen trunk: its outputs are computed once and cached.

The bottom ``n - unfreeze_blocks`` blocks are frozen and in eval mode (BatchNorm uses its running
statistics), so they map the same input to the same output every epoch. :func:`split_backbone`
cuts a :class:`~petsml.models.backbones.Backbone` into ``frozen_part(x)`` (the frozen blocks) and
``top_part(h)`` (the trainable blocks + pooling), with ``top_part(frozen_part(x)) ==
forward_features(x)``. :func:`build_cache` runs ``frozen_part`` once per image on the centre crop
plus ``views`` augmented crops (fixed seed) and stores the maps as float16; each epoch then draws
one cached view per image (seeded by the epoch) and trains only the top blocks and the head.

The augmentation is therefore limited to ``views + 1`` fixed crops per image instead of a fresh
crop every epoch; that is the price of skipping the frozen trunk's forward pass.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from petsml.data.tensors import augment, to_input
from petsml.models.backbones import Backbone, SequentialBackbone, TimmBackbone

log = logging.getLogger(__name__)

VIEWS = 3  # augmented views cached per training image, besides the centre crop
CACHE_SEED = 1_234_567  # added to train.seed for the cached views' augmentation
CACHE_DTYPE = torch.float16


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


def _steps(backbone: Backbone) -> tuple[list[nn.Module], Callable, nn.Module | None] | None:
    """The backbone's forward_features as (ordered modules, pooling tail, tail module)."""
    if isinstance(backbone, SequentialBackbone):
        return list(backbone.stages), backbone.head, backbone.head
    if isinstance(backbone, TimmBackbone):
        from timm.models.efficientnet import EfficientNet
        from timm.models.resnet import ResNet

        m = backbone.model
        if getattr(m, "grad_checkpointing", False):
            return None
        tail = lambda h: m.forward_head(h, pre_logits=True)  # noqa: E731
        if isinstance(m, EfficientNet):
            return [m.conv_stem, m.bn1, *m.blocks, m.conv_head, m.bn2], tail, None
        if isinstance(m, ResNet):
            mods = [m.conv1, m.bn1, m.act1, m.maxpool, m.layer1, m.layer2, m.layer3, m.layer4]
            return mods, tail, None
    return None


def views_for(epochs: int) -> int:
    """Augmented views to cache: :data:`VIEWS`, but never more than the epochs after the first
    can use (each epoch draws one of ``views + 1`` crops), so short runs do not pay for more
    frozen forward passes than the full-forward loop would make."""
    return max(0, min(VIEWS, int(epochs) - 1))


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
    steps = _steps(backbone)
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


@dataclass
class FeatureCache:
    """Frozen-part outputs: ``maps`` (N, views + 1, *shape) float16 (view 0 = centre crop)."""

    maps: torch.Tensor
    labels: torch.Tensor  # (N,) int64

    @property
    def bytes_per_image(self) -> int:
        return self.maps[0].numel() * self.maps.element_size()


@torch.inference_mode()
def build_cache(
    split: TopSplit,
    images: np.ndarray,
    labels: np.ndarray,
    prep,
    device: torch.device,
    *,
    views: int = 0,
    seed: int = 0,
    batch_size: int = 64,
    store: torch.device | None = None,
    desc: str = "cache",
) -> FeatureCache:
    """Run ``frozen_part`` once per image: the centre crop, then ``views`` augmented crops.

    The frozen modules must already be in eval mode (they are put there and left there).
    ``store`` is where the cache lives (default: ``device``).
    """
    for module in split.bottom:
        module.eval()
    store = device if store is None else store
    use_bf16 = device.type == "cuda"
    gen = torch.Generator().manual_seed(seed)
    chunks: list[torch.Tensor] = []
    n = len(images)
    bar = tqdm(total=n, desc=desc, unit="img", mininterval=2, leave=False)
    for start in range(0, n, batch_size):
        x_u8 = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size]))
        x_u8 = x_u8.to(device, non_blocking=True)
        crops = [to_input(x_u8, prep.mean, prep.std, size=prep.input_size, channels_last=use_bf16)]
        for _ in range(views):
            aug = augment(x_u8, prep.input_size, gen)
            crops.append(to_input(aug, prep.mean, prep.std, channels_last=use_bf16))
        outs = []
        for x in crops:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                h = split.frozen_part(x)
            outs.append(h.to(CACHE_DTYPE).contiguous())
        chunks.append(torch.stack(outs, dim=1).to(store))
        bar.update(len(x_u8))
    bar.close()
    maps = torch.cat(chunks) if chunks else torch.empty(0, views + 1, dtype=CACHE_DTYPE)
    return FeatureCache(maps, torch.from_numpy(np.asarray(labels, dtype=np.int64)).to(store))


def _input(h: torch.Tensor, device: torch.device) -> torch.Tensor:
    h = h.to(device, non_blocking=True).float()
    if device.type == "cuda" and h.ndim == 4:
        h = h.contiguous(memory_format=torch.channels_last)
    return h


def train_epoch(
    forward: Callable[[torch.Tensor], torch.Tensor],
    cache: FeatureCache,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    device: torch.device,
    batch_size: int,
    seed: int,
    desc: str = "cached",
) -> tuple[float, float]:
    """One epoch over the cache: one seeded view per image, shuffled, short last batch dropped.

    The caller sets train/eval modes. Returns (mean loss, accuracy) as floats.
    """
    n = len(cache.labels)
    rng = np.random.default_rng(seed)
    order = torch.from_numpy(rng.permutation(n))
    view = torch.from_numpy(rng.integers(0, cache.maps.shape[1], n))
    steps = max(1, n // batch_size) if n >= 2 else 1
    use_bf16 = device.type == "cuda"
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    bar = tqdm(total=steps, desc=desc, unit="batch", mininterval=2, leave=False)
    for step in range(steps):
        idx = order[step * batch_size : (step + 1) * batch_size]
        if not len(idx):
            break
        idx_s = idx.to(cache.maps.device)
        h = _input(cache.maps[idx_s, view[idx].to(cache.maps.device)], device)
        y = cache.labels[idx_s].to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            logits = forward(h)
        loss = F.cross_entropy(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        loss_sum += loss.detach() * len(y)
        correct += (logits.detach().argmax(1) == y).sum()
        seen += len(y)
        bar.update(1)
    bar.close()
    if not seen:
        return math.nan, 0.0
    return loss_sum.item() / seen, correct.item() / seen


@torch.inference_mode()
def evaluate(
    forward: Callable[[torch.Tensor], torch.Tensor],
    model: nn.Module,
    cache: FeatureCache,
    device: torch.device,
    batch_size: int,
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy on the cached centre crops (view 0)."""
    model.eval()
    n = len(cache.labels)
    inputs = (
        (
            _input(cache.maps[start : start + batch_size, 0], device),
            cache.labels[start : start + batch_size].to(device, non_blocking=True),
        )
        for start in range(0, n, batch_size)
    )
    return score(forward, inputs, device, n)


def score(
    forward: Callable[[torch.Tensor], torch.Tensor],
    inputs: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
    n: int,
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``forward`` over (input, label) batches; one sync."""
    use_bf16 = device.type == "cuda"
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    for x, y in inputs:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            logits = forward(x).float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum")
        correct += (logits.argmax(1) == y).sum()
    return loss_sum.item() / max(1, n), correct.item() / max(1, n)


def set_train_mode(model: nn.Module, frozen_blocks: Sequence[nn.Module]) -> None:
    model.train()
    for block in frozen_blocks:
        block.eval()  # frozen BatchNorm keeps its pretrained running statistics


def train_cached(
    images: np.ndarray,
    labels: np.ndarray,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    epochs: int,
    *,
    unfreeze_blocks: int,
    frozen_blocks: Sequence[nn.Module] = (),
    batch_size: int = 32,
    views: int | None = None,
    seed: int = 0,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    device: torch.device | str = "cpu",
) -> list[tuple[float, float]]:
    """The cached ``finetune_top`` loop on in-memory arrays (a Classifier already frozen by
    ``build_param_groups``): build the cache once, then ``epochs`` top-only epochs.

    Returns per-epoch (train loss, train accuracy). Raises ValueError when the backbone cannot
    be split (use the full-forward loop then).
    """
    device = torch.device(device)
    split = split_backbone(model.backbone, unfreeze_blocks)
    if split is None:
        raise ValueError(f"backbone {model.backbone.name!r} cannot be split for caching")
    prep = model.backbone.preprocessing
    set_train_mode(model, frozen_blocks)
    views = views_for(epochs) if views is None else views
    cache = build_cache(
        split, images, labels, prep, device, views=views, seed=seed + CACHE_SEED,
        batch_size=max(batch_size, 64),
    )  # fmt: skip
    top = TopModel(split, model.head)
    out = []
    for epoch in range(epochs):
        set_train_mode(model, frozen_blocks)
        out.append(train_epoch(top, cache, optimizer, scheduler, device, batch_size, seed + epoch))
    return out
