"""Inference latency of a saved classifier, measured the way it serves: uint8 images in,
preprocessing and forward pass on the device, per image at a given batch size.

Cheap on purpose (the compare stage runs it for every strategy): a few warm-up batches, then a
few timed ones (fewer when they exceed a time budget), on images drawn (seeded) from the decoded
cache; the median timed batch divided by the batch size. CUDA work is synchronised before the
clock stops.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from petsml.data.decode import DecodedImages
from petsml.data.tensors import to_input

BATCH_SIZES = (1, 64)  # what a single request sees, and a throughput-bound batch


@dataclass(frozen=True)
class Timing:
    """How many batches run before the clock starts, how many are timed, and the seconds after
    which timing stops early (at least one batch is always timed): a slow model on a busy CPU
    costs a bounded time, not ``repeats`` slow batches."""

    warmup: int
    repeats: int
    budget_s: float


# a batch of one is cheap: time more of them; a batch of 64 is seconds on a laptop CPU
TIMINGS = {1: Timing(warmup=3, repeats=15, budget_s=5.0), 64: Timing(1, 3, budget_s=10.0)}
DEFAULT_TIMING = Timing(warmup=1, repeats=3, budget_s=10.0)


def timing(batch_size: int) -> Timing:
    return TIMINGS.get(batch_size, DEFAULT_TIMING)


def sample_images(decoded: DecodedImages, n: int, seed: int = 0) -> np.ndarray:
    """``n`` images (NHWC uint8) drawn from the cache with a seeded generator (with replacement
    when the cache holds fewer)."""
    total = len(decoded.array)
    if total == 0:
        raise ValueError("the decoded cache holds no images to time the models on")
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(total, size=n, replace=n > total))
    return np.ascontiguousarray(decoded.array[rows])


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
    plan = plan or timing(batch_size)
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
    batch_sizes: Sequence[int] = BATCH_SIZES,
) -> dict[int, float]:
    """Milliseconds per image at each batch size."""
    return {b: 1000.0 * seconds_per_image(model, images, b, device) for b in batch_sizes}
