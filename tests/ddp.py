"""Data-parallel training runs for the DDP tests: N processes on CPU (gloo) on loopback.

``run_ranks`` starts the ranks as ``torchrun`` would (``WORLD_SIZE``/``RANK``/``LOCAL_RANK``,
``MASTER_ADDR``/``MASTER_PORT`` in each one's environment), in spawned processes that run
``train_strategy`` in-process; each rank writes its summary to ``<root>/rank<r>.json``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


class Crash(RuntimeError):
    """Stands in for a killed run after an epoch's checkpoint is on disk."""


def tiny_params(**overrides):
    """params.yaml with the tiny timm network on 40 px decoded images, fp32, on CPU."""
    from petsml.config import parse_params
    from petsml.testing.project import apply_overrides

    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    settings = {
        "model.backbone": "test_efficientnet", "model.pretrained": False,
        "model.image_size": 32, "model.precision": "fp32", "decode.size": 40,
        "train.device": "cpu", "train.epochs": 2, "train.batch_size": 8, "train.patience": 3,
        "train.warmup_epochs": 1, "train.seed": 0, "train.prefetch": 0,
        "features.batch_size": 64,
    } | overrides  # fmt: skip
    return parse_params(apply_overrides(raw, settings))


def train_rank(rank: int, world: int, port: int, job: dict) -> None:
    """One rank: the torchrun environment, then the ordinary training call."""
    import torch

    from petsml.training.finetune import train_strategy

    torch.set_num_threads(1)
    os.environ.update(
        WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
    )  # fmt: skip
    crash_after = job.get("crash_after")

    def on_epoch_end(epoch, model, record):
        if epoch == crash_after:
            raise Crash(f"killed after epoch {epoch}")

    summary = train_strategy(
        job["strategy"], tiny_params(**job.get("overrides", {})), Path(job["out"]),
        resume=job.get("resume", False), checkpoint_dir=Path(job["checkpoints"]),
        splits_dir=Path(job["splits"]), decoded_dir=Path(job["decoded"]),
        on_epoch_end=on_epoch_end,
    )  # fmt: skip
    Path(job["root"], f"rank{rank}.json").write_text(json.dumps(summary))


def run_ranks(world: int, job: dict) -> list[int | None]:
    """``world`` ranks of ``job`` at once; their exit codes."""
    import torch.multiprocessing as mp

    from tests.servers import free_port

    context = mp.start_processes(
        train_rank, args=(world, free_port(), job), nprocs=world, join=False,
        start_method="spawn",
    )  # fmt: skip
    for process in context.processes:
        process.join(timeout=600)
    return [process.exitcode for process in context.processes]
