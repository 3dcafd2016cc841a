"""Data-parallel fine-tuning (``torchrun``-style, 2 processes, gloo on CPU) against one process.

``finetune_full`` with LP-FT (every BatchNorm on its running statistics, so the result does not
depend on how a batch is split) on the same global batch must end at the same weights; an
interrupted 2-process run resumes from rank 0's checkpoint and ends where an uninterrupted one
does. The tiny timm network on 32 generated 40 px photos keeps it to seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from petsml.config import ConfigError, parse_params
from petsml.training import distributed
from petsml.training.checkpoint import CHECKPOINT
from petsml.training.finetune import train_strategy
from tests.ddp import REPO, run_ranks, tiny_params

pytestmark = [pytest.mark.slow(seconds=40), pytest.mark.integration]

STRATEGY = "finetune_full"


@pytest.fixture(scope="module")
def data(data_dirs):
    """tests/finetune_data.py's split CSVs and decoded cache (4 breeds, 24 train and 8 val
    images, 40 px), as the job's paths."""
    splits, decoded = data_dirs
    return {"splits": str(splits), "decoded": str(decoded)}


def _job(data, root, **extra) -> dict:
    root.mkdir(parents=True, exist_ok=True)
    return {"strategy": STRATEGY, "root": str(root), "out": str(root / "out"),
            "checkpoints": str(root / "checkpoints"), **data, **extra}  # fmt: skip


@pytest.fixture(scope="module")
def two_ranks(data, tmp_path_factory):
    """2 processes killed after epoch 1, then resumed for epoch 2 (two launches, not three:
    the resumed run is also the one compared with one process)."""
    job = _job(data, tmp_path_factory.mktemp("ddp-two"), crash_after=1)
    crashed = run_ranks(2, job)
    facts = {
        "crashed": crashed,
        "checkpoint_after_crash": (Path(job["checkpoints"]) / CHECKPOINT).exists(),
        "model_after_crash": (Path(job["out"]) / "model.pt").exists(),
    }
    facts["resumed"] = run_ranks(2, {**job, "crash_after": None, "resume": True})
    return job, facts


def test_an_interrupted_two_process_run_resumes_after_its_last_epoch(two_ranks):
    job, facts = two_ranks
    assert all(code not in (0, None) for code in facts["crashed"])
    assert facts["checkpoint_after_crash"] and not facts["model_after_crash"]  # rank 0 saved
    assert facts["resumed"] == [0, 0]
    for rank in (0, 1):
        summary = json.loads(Path(job["root"], f"rank{rank}.json").read_text())
        assert summary["resumed_from_epoch"] == 1 and summary["epochs_run"] == 2
    assert not (Path(job["checkpoints"]) / CHECKPOINT).exists()  # removed once written


def test_two_processes_end_at_the_one_process_weights(data, two_ranks, tmp_path):
    job, _ = two_ranks
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each rank: the same reduction order (restored: xdist workers)
    try:
        summary = train_strategy(
            STRATEGY, tiny_params(), tmp_path / "out", checkpoint_dir=tmp_path / "checkpoints",
            splits_dir=data["splits"], decoded_dir=data["decoded"],
        )  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    per_rank = [json.loads(Path(job["root"], f"rank{r}.json").read_text()) for r in (0, 1)]
    # metrics are reduced over the ranks: both saw the whole epoch, as one process does
    assert per_rank[0]["val_accuracy"] == per_rank[1]["val_accuracy"] == summary["val_accuracy"]
    assert per_rank[0]["best_epoch"] == summary["best_epoch"]
    one = torch.load(tmp_path / "out" / "model.pt", weights_only=True)["state_dict"]
    two = torch.load(Path(job["out"]) / "model.pt", weights_only=True)["state_dict"]
    assert one.keys() == two.keys()
    compared = 0
    for key, value in one.items():
        if value.is_floating_point():
            torch.testing.assert_close(two[key], value, rtol=1e-4, atol=1e-5, msg=key)
            compared += 1
    assert compared > 10


def test_train_distributed_is_validated_and_on_needs_a_launcher():
    import yaml

    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["train"]["distributed"] = "yes"
    with pytest.raises(ConfigError, match="train.distributed"):
        parse_params(raw)
    with pytest.raises(distributed.DistributedError, match="torchrun"):
        distributed.detect("on", environ={})
    launched = {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}
    assert distributed.detect("auto", environ=launched) == distributed.World(2, 1, 1)
    assert distributed.detect("off", environ=launched) == distributed.SINGLE
    assert distributed.World(2, 1, 1).share(8) == slice(4, 8)
    with pytest.raises(distributed.DistributedError, match="train.batch_size 9"):
        distributed.check_batch(distributed.World(2, 0, 0), 9)
