"""The generic training loop every trained strategy shares: data, step, epoch, scoring, schedule.

Nothing here knows which strategy runs: what trains, at which rate, and whether the frozen trunk
is cached is decided by the caller (:mod:`petsml.training.finetune`, using the strategy's row in
:mod:`petsml.training.strategies`). Early stopping and the best epoch live in :class:`Progress`,
which is also what a checkpoint stores.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from petsml.data.decode import DecodedImages
from petsml.data.prefetch import pinned, prefetch
from petsml.data.split import load_fit_split
from petsml.data.tensors import augment, batches, to_input
from petsml.errors import PetsError
from petsml.models.precision import autocast, use_bf16
from petsml.training.distributed import SINGLE, World, sum_over_ranks

log = logging.getLogger(__name__)

Forward = Callable[[torch.Tensor], torch.Tensor]


class TrainingError(PetsError):
    """A trained strategy cannot run with the given settings or data."""


# --------------------------------------------------------------------------------------------
# Data


@dataclass
class SplitData:
    image_ids: list[str]
    images: np.ndarray  # (N, S, S, 3) uint8
    labels: np.ndarray  # (N,) int64


def load_split_data(
    split: str,
    task: str,
    splits_dir: Path,
    decoded: DecodedImages,
    excluded: Path | None = None,
) -> SplitData:
    """The ``split`` CSV's ids and labels with their decoded pixels, less the rows ``excluded``
    (the data_issues stage's list) leaves out."""
    path = Path(splits_dir) / f"{split}.csv"
    if not path.exists():
        raise TrainingError(f"{path}: split missing. Run `dvc repro split` first.")
    frame = load_fit_split(splits_dir, split, task, excluded)
    if frame.empty:
        raise TrainingError(f"{path} has no rows; check the split stage and validate.* params.")
    ids = frame["image_id"].tolist()
    return SplitData(ids, decoded.take(ids), np.array(frame["label"], dtype=np.int64))


# --------------------------------------------------------------------------------------------
# Schedule and bookkeeping


def lr_factor(step: int, total_steps: int, warmup_steps: int) -> float:
    """Linear warm-up to 1, then cosine decay to 0 at ``total_steps``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Full batches per epoch (the short last one is dropped); 1 for tiny splits."""
    return max(1, n // batch_size) if n >= 2 else 1


def optimizer_and_schedule(
    param_groups: list[dict[str, Any]], steps: int, epochs: int, warmup_epochs: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """AdamW over ``param_groups`` and its warm-up + cosine schedule, stepped per batch."""
    optimizer = torch.optim.AdamW(param_groups)
    total_steps, warmup_steps = steps * epochs, steps * warmup_epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, warmup_steps)
    )
    return optimizer, scheduler


def check_loss(loss_value: float) -> None:
    if not math.isfinite(loss_value):
        raise TrainingError(
            f"training loss is {loss_value}: the learning rate is too high for this model; "
            "lower the strategy's lr in params.yaml."
        )


def cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of ``module``'s weights (the best epoch's, a checkpoint's)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


@dataclass
class Progress:
    """Where a run stands: its history, best epoch and early-stopping count (checkpointed)."""

    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] = field(
        default_factory=lambda: {"accuracy": -1.0, "epoch": 0, "state": None}
    )
    bad_epochs: int = 0
    stopped_early: bool = False
    next_epoch: int = 1
    resumed_from: int | None = None

    def keep_if_best(self, accuracy: float, epoch: int, model: nn.Module) -> bool:
        """Keep ``model``'s weights when ``accuracy`` beats the best so far; say whether it did."""
        if not accuracy > self.best["accuracy"]:  # NaN never wins
            return False
        self.best = {"accuracy": accuracy, "epoch": epoch, "state": cpu_state(model)}
        return True

    def record(self, record: dict[str, Any], model: nn.Module, patience: int, epochs: int) -> None:
        """Add an epoch's record; stop early after ``patience`` epochs without a gain."""
        epoch = record["epoch"]
        self.history.append(record)
        self.next_epoch = epoch + 1
        if self.keep_if_best(record["val_accuracy"], epoch, model):
            self.bad_epochs = 0
        else:
            self.bad_epochs += 1
            self.stopped_early = self.bad_epochs >= patience and epoch < epochs


# --------------------------------------------------------------------------------------------
# Step, epoch, scoring


def train_step(
    forward: Forward,
    x: torch.Tensor,
    y: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    device: torch.device,
    bf16: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimiser step on a batch (the forward pass under ``bf16`` autocast, the loss in
    float32). Returns the detached loss and logits, left on the device (no sync)."""
    with autocast(device, bf16):
        logits = forward(x)
    loss = F.cross_entropy(logits.float(), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return loss.detach(), logits.detach()


def score(
    forward: Forward,
    inputs: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
    n: int,
    precision: str = "auto",
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``forward`` over (input, label) batches; one sync."""
    bf16 = use_bf16(device, precision)
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    for x, y in inputs:
        with autocast(device, bf16):
            logits = forward(x).float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum")
        correct += (logits.argmax(1) == y).sum()
    return loss_sum.item() / max(1, n), correct.item() / max(1, n)


def set_train_mode(
    model: nn.Module, frozen_blocks: Sequence[nn.Module], keep_norm_stats: bool = False
) -> None:
    """Train mode for what trains, eval mode for the frozen blocks (their BatchNorm keeps its
    pretrained running statistics). ``keep_norm_stats`` puts every BatchNorm in eval mode: the
    trainable blocks then normalise with their running statistics too (their scale and shift
    still train), so the features at the first step are exactly the eval-mode features a
    linear probe was fitted on (LP-FT; see :mod:`petsml.training.finetune`)."""
    model.train()
    for block in frozen_blocks:
        block.eval()
    if keep_norm_stats:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


def centre_crops(
    data: SplitData, prep, device: torch.device, batch_size: int, prefetch_depth: int = 2
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(model input, label) batches of the centre crops, in order, read ahead, on ``device``."""
    stream = (pinned(b, device) for b in batches(data.images, data.labels, batch_size))
    for x_u8, y in prefetch(stream, prefetch_depth):
        x_u8 = x_u8.to(device, non_blocking=True)
        x = to_input(x_u8, prep.mean, prep.std, size=prep.input_size)
        yield x, y.to(device, non_blocking=True)


@torch.inference_mode()
def evaluate(
    forward: Forward,
    model: nn.Module,
    data: SplitData,
    prep,
    device: torch.device,
    batch_size: int,
    prefetch_depth: int = 2,
    precision: str = "auto",
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy on centre crops."""
    model.eval()
    inputs = centre_crops(data, prep, device, batch_size, prefetch_depth)
    return score(forward, inputs, device, len(data.labels), precision)


def train_epoch_full(
    forward: Forward,
    model: nn.Module,
    frozen_blocks: list[nn.Module],
    data: SplitData,
    prep,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    generator: torch.Generator,
    device: torch.device,
    batch_size: int,
    shuffle_seed: int,
    desc: str,
    prefetch_depth: int = 2,
    precision: str = "auto",
    keep_norm_stats: bool = False,
    world: World = SINGLE,
) -> tuple[float, float]:
    """One epoch through the whole network: uint8 batches read ahead, augmented on the device,
    bf16 autocast on CUDA; the short last batch is dropped. Returns (mean loss, accuracy).

    Data-parallel (``world``, :mod:`petsml.training.distributed`): ``batch_size`` is the global
    batch; this rank reads and trains its share of each, and the returned metrics are summed
    over the ranks."""
    set_train_mode(model, frozen_blocks, keep_norm_stats)
    bf16 = use_bf16(device, precision)
    steps = steps_per_epoch(len(data.labels), batch_size)
    rows = world.share(batch_size) if world.enabled else None
    if world.enabled and len(data.labels) < batch_size:
        raise TrainingError(
            f"{len(data.labels)} train images are fewer than one global batch "
            f"(train.batch_size {batch_size}): lower train.batch_size to train data-parallel"
        )
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    bar = tqdm(total=steps, desc=desc, unit="batch", mininterval=2, leave=False)
    stream = batches(
        data.images, data.labels, batch_size, shuffle=True, seed=shuffle_seed, rows=rows
    )
    stream = (pinned(b, device) for b in stream)
    for step, (x_u8, y) in enumerate(prefetch(stream, prefetch_depth)):
        if step >= steps:  # drop the short last batch: BatchNorm needs more than one sample
            break
        x_u8 = x_u8.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True)
        of = batch_size if rows is not None else None
        x = to_input(augment(x_u8, prep.input_size, generator, rows=rows, of=of), prep.mean,
                     prep.std)  # fmt: skip
        loss, logits = train_step(forward, x, y, optimizer, scheduler, device, bf16)
        loss_sum += loss * len(y)
        correct += (logits.argmax(1) == y).sum()
        seen += len(y)
        bar.update(1)
        if step % 10 == 0 or step == steps - 1:  # .item() syncs the GPU: not every step
            bar.set_postfix(
                loss=f"{loss_sum.item() / seen:.3f}", acc=f"{correct.item() / seen:.3f}"
            )
    bar.close()
    loss_total, correct_total, seen = sum_over_ranks(world, loss_sum.item(), correct.item(), seen)
    if not seen:
        raise TrainingError("no training batch ran; the train split is empty")
    loss_value = loss_total / seen
    check_loss(loss_value)
    return loss_value, correct_total / seen
