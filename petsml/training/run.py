"""A trained strategy set up to run: seeded data, model, optimiser, schedule and forward passes.

:func:`set_up` does, in a fixed seeded order, everything a run needs before its first epoch;
:class:`Run` carries it through :mod:`petsml.training.finetune`'s recipe. Which blocks train, at
which rate, whether the weights start pretrained and whether the frozen trunk is cached come
from the strategy's registry row.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from petsml.config import Params
from petsml.data.decode import DecodedImages
from petsml.data.split import class_names as class_names_of
from petsml.data.tensors import pick_device
from petsml.models.classifier import Classifier
from petsml.training import cached_top, distributed, top_split
from petsml.training.loop import (
    Forward,
    SplitData,
    TrainingError,
    load_split_data,
    optimizer_and_schedule,
    steps_per_epoch,
)
from petsml.training.param_groups import Groups, build_model, build_param_groups
from petsml.training.spec import Inputs, Strategy

log = logging.getLogger(__name__)


@dataclass
class Run:
    """A trained strategy ready to run: its data, model, optimiser and forward passes."""

    strategy: Strategy
    params: Params
    class_names: list[str]
    train: SplitData
    val: SplitData
    decode_size: int
    device: torch.device
    model: Classifier
    groups: Groups
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    generator: torch.Generator
    steps: int
    forward: Forward
    split: top_split.TopSplit | None = None
    top_forward: Forward | None = None  # the trainable top + head on cached frozen outputs
    caches: tuple[cached_top.FeatureCache, cached_top.FeatureCache] | None = None
    world: distributed.World = distributed.SINGLE
    train_forward: Forward | None = None  # what training steps run (DDP-wrapped when several)

    @property
    def settings(self) -> Any:
        return self.strategy.settings(self.params)

    @property
    def prep(self):
        return self.model.backbone.preprocessing

    @property
    def from_probe(self) -> bool:
        # LP-FT: the probe head was fitted on eval-mode features; trainable BatchNorm in train
        # mode would normalise with batch statistics instead and hand the probe different
        # features at the first step (on generated photos: loss ~100, val 0.86 -> 0.22).
        return getattr(self.settings, "head_init", "random") == "probe"


def load_data(
    params: Params, inputs: Inputs, class_names: list[str]
) -> tuple[SplitData, SplitData, int]:
    """Train and val images with their labels, checked; and the decoded images' size."""
    task = params.data.task
    decoded = DecodedImages.open(inputs.decoded_dir)
    splits, excluded = Path(inputs.splits_dir), inputs.excluded_file
    train = load_split_data("train", task, splits, decoded, excluded)
    val = load_split_data("val", task, splits, decoded, excluded)
    bad = np.setdiff1d(np.concatenate([train.labels, val.labels]), range(len(class_names)))
    if bad.size:
        raise TrainingError(f"labels {bad[:5].tolist()} are outside task {task!r}'s classes")
    if decoded.size != params.decode.size:
        log.warning(
            "decoded cache is %dpx but decode.size is %d; using the cache (re-run decode)",
            decoded.size,
            params.decode.size,
        )
    return train, val, decoded.size


def set_up(
    strategy: Strategy,
    params: Params,
    inputs: Inputs,
    world: distributed.World = distributed.SINGLE,
) -> Run:
    """Data, device, model, parameter groups, optimiser and schedule, in a seeded order (the
    same on every data-parallel rank; ``world`` picks this rank's device)."""
    t = params.train
    class_names = class_names_of(inputs.splits_dir, params.data.task)
    train, val, decode_size = load_data(params, inputs, class_names)
    device = distributed.start(world, pick_device(t.device))
    random.seed(t.seed)
    np.random.seed(t.seed)
    model = build_model(strategy, params, len(class_names))
    input_size = model.backbone.preprocessing.input_size
    if input_size > decode_size:
        raise TrainingError(
            f"model input {input_size}px is larger than the decoded images "
            f"({decode_size}px): raise decode.size or lower model.image_size in params.yaml."
        )
    groups = build_param_groups(strategy, model, params)
    split = None
    if strategy.cache_frozen_trunk:
        settings = strategy.settings(params)
        split = top_split.split_for(model, settings.unfreeze_blocks, params.model.backbone)
    model = _to_device(model, device)
    steps = steps_per_epoch(len(train.labels), t.batch_size)
    optimizer, scheduler = optimizer_and_schedule(
        groups.param_groups, steps, t.epochs, t.warmup_epochs
    )
    generator = torch.Generator().manual_seed(t.seed)
    top = top_split.TopModel(split, model.head) if split is not None else None
    forward, top_forward = _compiled(model, top, device, t.compile)
    return Run(
        strategy, params, class_names, train, val, decode_size, device, model, groups,
        optimizer, scheduler, generator, steps, forward, split, top_forward, world=world,
    )  # fmt: skip


def _to_device(model: Classifier, device: torch.device) -> Classifier:
    # channels_last everywhere: on CPU it makes the depthwise convolutions' backward pass 3x
    # faster (measured) and the fine-tuning step ~1.4x; on GPUs tensor cores want it.
    model = model.to(device, memory_format=torch.channels_last)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    return model


def _compiled(
    model: Classifier, top: torch.nn.Module | None, device: torch.device, compile_: bool
) -> tuple[Forward, Forward | None]:
    """The full forward and the cached-top forward, through torch.compile when asked."""
    if not compile_:
        return model, top
    if device.type == "mps":
        log.warning("train.compile is ignored on mps")
        return model, top
    return torch.compile(model), (torch.compile(top) if top is not None else None)


def log_start(run: Run) -> None:
    log.info(
        "%s: %d train / %d val images, %d classes, %s, input %dpx, %d steps/epoch, "
        "%d trainable / %d parameters",
        run.strategy.name,
        len(run.train.labels),
        len(run.val.labels),
        len(run.class_names),
        run.device,
        run.prep.input_size,
        run.steps,
        sum(p.numel() for p in run.model.parameters() if p.requires_grad),
        sum(p.numel() for p in run.model.parameters()),
    )
