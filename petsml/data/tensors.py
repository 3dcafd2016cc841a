"""uint8 image batches -> model input, and augmentation done on whole batches.

Augmenting a batch tensor (on the GPU when there is one) instead of one PIL image at a time keeps
the data path from becoming the bottleneck. Inputs are NHWC uint8 from the decoded cache.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F


def center_crop(batch: torch.Tensor, size: int) -> torch.Tensor:
    """Centre crop an NHWC batch to size x size (the standard 'resize 256, crop 224')."""
    height, width = batch.shape[1:3]
    if size > min(height, width):
        raise ValueError(
            f"crop {size} is larger than the decoded images ({height}x{width}): raise "
            "decode.size in params.yaml or lower model.image_size"
        )
    top = (height - size) // 2
    left = (width - size) // 2
    return batch[:, top : top + size, left : left + size]


def to_input(
    batch_u8: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    size: int | None = None,
    channels_last: bool = True,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """NHWC uint8 -> normalised NCHW float (optionally centre-cropped first)."""
    if size is not None and batch_u8.shape[1] != size:
        batch_u8 = center_crop(batch_u8, size)
    x = batch_u8.permute(0, 3, 1, 2).to(dtype).div_(255.0)
    mean_t = torch.tensor(mean, dtype=dtype, device=x.device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=dtype, device=x.device).view(1, 3, 1, 1)
    x = (x - mean_t) / std_t
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x.contiguous()


def augment(
    batch_u8: torch.Tensor,
    size: int,
    generator: torch.Generator,
    scale: tuple[float, float] = (0.35, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    rows: slice | None = None,
    of: int | None = None,
) -> torch.Tensor:
    """Random-resized-crop + horizontal flip for a whole NHWC uint8 batch; returns NHWC uint8.

    One affine grid per image, sampled in a single ``grid_sample`` call, so the cost is one
    kernel per batch rather than per image. ``rows`` of a batch of ``of`` images: the random
    draws are made for all ``of`` and these rows used, so the shares of a batch split over
    data-parallel ranks get exactly the crops the whole batch would.
    """
    n = batch_u8.shape[0]
    dev = batch_u8.device
    total = n if of is None else of
    rows = slice(0, n) if rows is None else rows
    rand = torch.rand(total, 4, generator=generator, device=generator.device)[rows].to(dev)
    area = scale[0] + (scale[1] - scale[0]) * rand[:, 0]
    log_r = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * rand[:, 1]
    aspect = torch.exp(log_r)
    w = torch.sqrt(area * aspect).clamp(max=1.0)
    h = torch.sqrt(area / aspect).clamp(max=1.0)
    cx = (rand[:, 2] * 2 - 1) * (1 - w)
    cy = (rand[:, 3] * 2 - 1) * (1 - h)
    flip = torch.rand(total, generator=generator, device=generator.device)[rows].to(dev) < 0.5
    sx = torch.where(flip, -w, w)
    theta = torch.zeros(n, 2, 3, device=dev)
    theta[:, 0, 0] = sx
    theta[:, 0, 2] = cx
    theta[:, 1, 1] = h
    theta[:, 1, 2] = cy
    x = batch_u8.permute(0, 3, 1, 2).float()
    grid = F.affine_grid(theta, [n, 3, size, size], align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    return out.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)


def batches(
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    shuffle: bool = False,
    seed: int = 0,
    rows: slice | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (NHWC uint8, int64 label) tensor batches from in-memory arrays; with ``rows``,
    only those rows of each batch (a data-parallel rank's share: the others are not read)."""
    order = np.random.default_rng(seed).permutation(len(images)) if shuffle else None
    for start in range(0, len(images), batch_size):
        idx = (
            order[start : start + batch_size]
            if order is not None
            else np.arange(start, min(start + batch_size, len(images)))
        )
        if rows is not None:
            idx = idx[rows]
        elif order is None:
            idx = slice(start, start + batch_size)
        yield (
            torch.from_numpy(np.ascontiguousarray(images[idx])),
            torch.from_numpy(np.array(labels[idx], dtype=np.int64)),  # copied: may be read-only
        )


def pick_device(requested: str = "auto") -> torch.device:
    """cuda, then mps, then cpu; ``train.device`` overrides."""
    if requested != "auto":
        return torch.device(requested)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


# Inference batch sizes for features.batch_size: auto. On a CPU a batch whose activations fit the
# caches wins: EfficientNet-Lite1's fused frozen pass on a 2-core EPYC ran at 55 images/s at
# batch 4, 47 at 16 and 32 at 64 (benchmarks/extraction.py); a GPU wants large batches.
AUTO_BATCH = {"cpu": 4, "cuda": 64, "mps": 32}


def inference_batch_size(requested: int | str, device: torch.device) -> int:
    """``features.batch_size`` as a number for ``device`` (``auto``: :data:`AUTO_BATCH`)."""
    if requested != "auto":
        return int(requested)
    return AUTO_BATCH.get(device.type, 16)
