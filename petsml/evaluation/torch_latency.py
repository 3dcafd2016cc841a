"""Inference latency of saved classifiers, measured the way they serve: uint8 images in,
preprocessing and the fused forward pass on the device, per image at a given batch size.

Cheap on purpose: one time budget for the whole compare stage (``compare.latency_budget_s``),
shared by the *distinct networks* among the strategies - two strategies whose networks compute
the same graph (same backbone architecture and input, same feature, same test-time views)
wait the same, so one is measured and the figure is theirs both. Per network: a few warm-up
calls, then timed batches until its share of the budget is spent (at least one each); the
median timed batch divided by the batch size. CUDA work is synchronised before the clock stops.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from petsml.data.tensors import to_input

BATCH_SIZES = (1, 16)  # what a single request sees, and a throughput-bound batch (on a CPU,
# larger batches are slower per image: their activations no longer fit the caches)


@dataclass(frozen=True)
class Timing:
    """How many batches run before the clock starts, how many are timed at most, and the
    seconds after which timing stops (at least one batch is always timed)."""

    warmup: int
    repeats: int
    budget_s: float


def timing_plan(batch_size: int, share_s: float) -> Timing:
    """A network's share of the budget: batch 1 gets a third (many cheap calls), the larger
    batch the rest (its first call warms up on the batch-1 calls' kernels)."""
    if batch_size == 1:
        return Timing(warmup=2, repeats=50, budget_s=share_s / 3)
    return Timing(warmup=1, repeats=3, budget_s=2 * share_s / 3)


def network_key(model: torch.nn.Module) -> tuple:
    """Equal for classifiers whose forward passes compute the same graph (weights aside)."""
    backbone = model.backbone
    early = int(backbone.early_index) if model.feature == "early" else None
    return (backbone.resolved_name, int(backbone.preprocessing.input_size), model.feature, early,
            model.tta, int(model.num_classes), type(model.head).__name__)  # fmt: skip


def timing_images(n: int, size: int, seed: int = 0) -> np.ndarray:
    """``n`` seeded noise images (NHWC uint8, ``size`` px): a network's latency does not depend
    on what the pixels show, and timing on generated images sends no photo through a frozen
    backbone a second time."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def seconds_per_image(
    model: torch.nn.Module,
    images: np.ndarray,
    batch_size: int,
    device: torch.device,
    plan: Timing | None = None,
) -> float:
    """Median seconds per image of ``model`` on batches of ``batch_size`` of ``images``."""
    plan = plan or Timing(warmup=1, repeats=3, budget_s=10.0)
    prep = model.backbone.preprocessing
    model = model.eval().to(device, memory_format=torch.channels_last)
    batch = torch.from_numpy(images[:batch_size])
    if len(batch) < batch_size:
        raise ValueError(f"{len(batch)} images given for batch size {batch_size}")
    times: list[float] = []
    for step in range(plan.warmup + plan.repeats):
        _sync(device)
        start = time.perf_counter()
        x = to_input(batch.to(device), prep.mean, prep.std, size=int(prep.input_size))
        model(x)
        _sync(device)
        if step >= plan.warmup:
            times.append(time.perf_counter() - start)
            if sum(times) > plan.budget_s:
                break
    return statistics.median(times) / batch_size


def latency_ms(
    model: torch.nn.Module,
    images: np.ndarray,
    device: torch.device,
    share_s: float,
    batch_sizes: Sequence[int] = BATCH_SIZES,
) -> dict[int, float]:
    """Milliseconds per image at each batch size, within about ``share_s`` seconds."""
    return {
        b: 1000.0 * seconds_per_image(model, images, b, device, timing_plan(b, share_s))
        for b in batch_sizes
    }


def measure_networks(
    models: dict[str, torch.nn.Module], images: np.ndarray, device: torch.device, budget_s: float
) -> tuple[dict[str, dict[int, float]], list[list[str]]]:
    """Latency of each strategy's model, each distinct network measured once within its share
    of ``budget_s``; also the groups of strategies that shared a measurement."""
    groups: dict[tuple, list[str]] = {}
    for strategy, model in models.items():
        groups.setdefault(network_key(model), []).append(strategy)
    share = budget_s / max(1, len(groups))
    out: dict[str, dict[int, float]] = {}
    for names in groups.values():
        measured = latency_ms(models[names[0]], images, device, share)
        out.update({name: measured for name in names})
    return out, list(groups.values())
