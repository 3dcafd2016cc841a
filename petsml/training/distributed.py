"""Data-parallel training over several processes (``torchrun``): who is who, and the collectives.

``torchrun --nproc-per-node N -m stages.train finetune_full`` starts N copies of the stage with
``WORLD_SIZE``/``RANK``/``LOCAL_RANK`` (and the rendezvous address) in their environment;
``train.distributed`` decides what they do with it (``auto``: data-parallel when launched so,
``on``: insist on it, ``off``: ignore it). The run is then the one-process run, split:

- **the same global batch.** Every rank draws the same shuffled order (one seed) and reads only
  its contiguous share of each global batch of ``train.batch_size`` images from the decoded
  cache (DistributedSampler-style, but a share per *batch*, so the N shares of a step are
  exactly the one-process batch); augmentation parameters are drawn for the whole global batch
  on every rank and each uses its rows, so the N shares see exactly the one-process crops;
- **the same steps.** Gradients are averaged across ranks by DistributedDataParallel: the mean
  of N share means is the global batch mean, so optimiser, warm-up and cosine schedule
  (counted in global steps) are the one-process ones;
- **reduced metrics.** Training loss/accuracy and validation (each rank scores an interleaved
  share of the val split) are summed over ranks, so every rank sees the same numbers and keeps
  the same best epoch;
- **rank 0 writes.** Checkpoints and the model folder are written by rank 0 only; a resumed run
  reads the checkpoint on every rank (one machine, or a shared checkpoint folder).

BatchNorm layers in train mode normalise with per-rank batch statistics on CPU (``gloo``), and
with statistics synchronised over the global batch on CUDA (``SyncBatchNorm``). With LP-FT
(``head_init: probe``) every BatchNorm uses its running statistics, so CPU runs match too.
No MLflow/DVC here: this is plain ``torch.distributed``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
from torch import nn

from petsml.errors import PetsError

log = logging.getLogger(__name__)

ENV_KEYS = ("WORLD_SIZE", "RANK", "LOCAL_RANK")


class DistributedError(PetsError):
    """A data-parallel run cannot start as configured; the message names the fix."""


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (one process: size 1, rank 0)."""

    size: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes checkpoints and outputs."""
        return self.rank == 0

    def share(self, global_batch: int) -> slice:
        """This rank's rows of a global batch (``train.batch_size`` must divide evenly)."""
        per_rank = global_batch // self.size
        return slice(self.rank * per_rank, (self.rank + 1) * per_rank)


SINGLE = World()


def detect(setting: str = "auto", environ: dict[str, str] | None = None) -> World:
    """The world from the launcher's environment, as ``train.distributed`` says to use it."""
    env = os.environ if environ is None else environ
    launched = all(key in env for key in ENV_KEYS)
    if setting == "off":
        if launched and int(env["WORLD_SIZE"]) > 1:
            log.warning("train.distributed is off: this process trains alone, ignoring torchrun")
        return SINGLE
    if not launched:
        if setting == "on":
            raise DistributedError(
                "train.distributed is on but WORLD_SIZE/RANK/LOCAL_RANK are not set: launch "
                "with `torchrun --nproc-per-node N -m stages.train <strategy>`, or set "
                "train.distributed: auto in params.yaml."
            )
        return SINGLE
    world = World(int(env["WORLD_SIZE"]), int(env["RANK"]), int(env["LOCAL_RANK"]))
    return world if world.enabled else SINGLE


def check_batch(world: World, batch_size: int) -> None:
    if world.enabled and batch_size % world.size:
        raise DistributedError(
            f"train.batch_size {batch_size} is not divisible by the {world.size} training "
            "processes: every rank takes an equal share of each global batch; change "
            "train.batch_size or --nproc-per-node."
        )


def start(world: World, device: torch.device) -> torch.device:
    """Join the process group (NCCL on CUDA, gloo otherwise); this rank's device."""
    if not world.enabled:
        return device
    import torch.distributed as dist

    if device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, rank=world.rank, world_size=world.size)
    log.info("rank %d of %d on %s", world.rank, world.size, device)
    return device


def stop(world: World) -> None:
    if world.enabled:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def barrier(world: World) -> None:
    if world.enabled:
        import torch.distributed as dist

        dist.barrier()


def wrap(model: nn.Module, world: World, device: torch.device) -> nn.Module:
    """``model`` in DistributedDataParallel (its weights broadcast from rank 0): the module
    training steps run through; evaluation uses the bare ``model`` (ranks score different
    numbers of val batches, and DDP's forward would wait for the others)."""
    if not world.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    if device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # same parameters, synced stats
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, broadcast_buffers=False)


def sum_over_ranks(world: World, *values: float | torch.Tensor) -> list[float]:
    """Each value summed over every rank (one all-reduce)."""
    if not world.enabled:
        return [float(v) for v in values]
    import torch.distributed as dist

    flat = torch.tensor([float(v) for v in values], dtype=torch.float64)
    dist.all_reduce(flat)
    return flat.tolist()
