"""Checkpoint files on disk: a run killed while writing its checkpoint leaves a partial temp
file beside ``last.pt``; the next run cleans it, so a resumed and finished run leaves nothing."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from petsml.testing.project import tool_env
from petsml.training.checkpoint import CHECKPOINT, load_checkpoint, remove_checkpoint

STRATEGY = "scratch"
SETTINGS = {
    "model.backbone": "test_efficientnet", "model.pretrained": False, "model.image_size": 32,
    "model.precision": "fp32", "decode.size": 40, "train.device": "cpu", "train.epochs": 3,
    "train.batch_size": 8, "train.patience": 3, "train.warmup_epochs": 1, "train.seed": 0,
    "features.batch_size": 64,
}  # fmt: skip

# The training run in a process of its own: epoch 2's checkpoint is half written when the
# process is SIGKILLed (a real kill, not an exception any handler could see).
CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    import torch, yaml
    torch.set_num_threads(1)
    from petsml.config import parse_params
    from petsml.training.finetune import train_strategy
    from petsml.testing.project import apply_overrides, REPO
    root, settings = Path(sys.argv[1]), yaml.safe_load(sys.argv[2])
    params = parse_params(apply_overrides(yaml.safe_load((REPO / "params.yaml").read_text()),
                                          settings))
    real_save, calls = torch.save, []
    def dying_save(obj, f, *args, **kwargs):
        calls.append(f)
        real_save(obj, f, *args, **kwargs)
        if len(calls) == 2:
            os.truncate(f, os.path.getsize(f) // 2)
            os.kill(os.getpid(), signal.SIGKILL)
    torch.save = dying_save
    train_strategy("scratch", params, root / "out" / "scratch", resume=True,
                   checkpoint_dir=root / "checkpoints" / "scratch",
                   splits_dir=root / "splits", decoded_dir=root / "decoded")
    """
)


def _temp_files(folder: Path) -> list[Path]:
    return sorted(folder.glob(f".{CHECKPOINT}.*")) if folder.is_dir() else []


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    """Split CSVs and a decoded cache for 4 breeds (24 train, 8 val images of 40 px)."""
    from petsml.data.decode import decode_images
    from petsml.testing.fakedata import make_dataset, split_rows

    ds = make_dataset(tmp_path / "src", per_breed=8, test_per_breed=0, size=(48, 44),
                      quirks=False)  # fmt: skip
    frame = pd.DataFrame(split_rows(ds))
    is_val = frame["image_id"].str.endswith(("_1", "_2"))
    (tmp_path / "splits").mkdir()
    frame[~is_val].to_csv(tmp_path / "splits" / "train.csv", index=False)
    frame[is_val].to_csv(tmp_path / "splits" / "val.csv", index=False)
    decode_images(frame, tmp_path / "src", tmp_path / "decoded", size=40, workers=1)
    return tmp_path


@pytest.mark.integration
def test_a_run_killed_mid_checkpoint_leaves_no_temp_file_once_resumed_and_finished(data_root):
    import yaml

    from petsml.config import parse_params
    from petsml.testing.project import REPO, apply_overrides
    from petsml.training.finetune import train_strategy

    checkpoints = data_root / "checkpoints" / STRATEGY
    killed = subprocess.run(
        [sys.executable, "-c", CHILD, str(data_root), yaml.safe_dump(SETTINGS)],
        env=tool_env(OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert (checkpoints / CHECKPOINT).is_file()  # epoch 1's, whole
    assert _temp_files(checkpoints), "the kill left no partial checkpoint to clean"

    params = parse_params(apply_overrides(yaml.safe_load((REPO / "params.yaml").read_text()),
                                          SETTINGS))  # fmt: skip
    summary = train_strategy(STRATEGY, params, data_root / "out" / STRATEGY, resume=True,
                             checkpoint_dir=checkpoints, splits_dir=data_root / "splits",
                             decoded_dir=data_root / "decoded")  # fmt: skip
    assert summary["resumed_from_epoch"] == 1 and summary["epochs_run"] == 3
    assert _temp_files(checkpoints) == []
    assert not checkpoints.exists()  # last.pt removed, then its folder


def test_starting_a_run_removes_earlier_runs_temp_files(tmp_path):
    """On start (whether a checkpoint is resumed or not) and on finishing."""
    folder = tmp_path / "checkpoints" / STRATEGY
    folder.mkdir(parents=True)
    stale = folder / f".{CHECKPOINT}.k3j2h1.pt"
    stale.write_bytes(b"half a checkpoint")
    assert load_checkpoint(folder / CHECKPOINT, "fingerprint") is None
    assert not stale.exists()
    stale.write_bytes(b"half a checkpoint")
    remove_checkpoint(folder)
    assert not folder.exists()


def test_the_docs_name_the_checkpoint_file_the_train_stage_writes():
    """README and docs/ once named `models/.../checkpoint.pt`; the file is
    `data/checkpoints/<strategy>/last.pt` (stages/train.py's folder, CHECKPOINT's name)."""
    from petsml.testing.project import REPO
    from stages.train import CHECKPOINTS

    written = (
        f"{CHECKPOINTS.relative_to(CHECKPOINTS.parents[1]).as_posix()}/<strategy>/{CHECKPOINT}"
    )
    assert written == "data/checkpoints/<strategy>/last.pt"
    docs = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    for doc in docs:
        assert "checkpoint.pt" not in doc.read_text(), f"{doc.name} names a checkpoint.pt"
    for doc in (REPO / "docs" / "PIPELINE.md", REPO / "docs" / "BAD_INPUT.md"):
        assert written in doc.read_text(), f"{doc.name} does not name {written}"
