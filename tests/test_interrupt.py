"""Ctrl-C during a training stage: one line saying what was saved, exit 130, then a clean resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from petsml import paths
from petsml.data.decode import decode_images
from petsml.data.split import EXCLUDED_COLUMNS
from petsml.io import read_json
from petsml.testing.fakedata import make_dataset, split_rows
from petsml.testing.project import REPO, apply_overrides, tool_env

pytestmark = pytest.mark.integration

STRATEGY = "scratch"


def _tiny_project(root: Path) -> Path:
    """params.yaml, data/splits and data/decoded: what `python -m stages.train` reads."""
    ds = make_dataset(root / "src", per_breed=8, test_per_breed=0, size=(48, 44), quirks=False)
    frame = pd.DataFrame(split_rows(ds))
    is_val = frame["image_id"].str.endswith(("_1", "_2"))
    project = root / "project"
    splits = project / "data" / "splits"
    splits.mkdir(parents=True)
    frame[~is_val].to_csv(splits / "train.csv", index=False)
    frame[is_val].to_csv(splits / "val.csv", index=False)
    decode_images(frame, root / "src", project / "data" / "decoded", size=40, workers=1)
    excluded = project / paths.EXCLUDED  # the data_issues stage's list, here leaving out nothing
    excluded.parent.mkdir(parents=True)
    pd.DataFrame(columns=EXCLUDED_COLUMNS).to_csv(excluded, index=False)
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    settings = {
        "model.backbone": "test_efficientnet",
        "model.pretrained": False,
        "model.image_size": 32,
        "model.precision": "fp32",
        "decode.size": 40,
        "train.device": "cpu",
        "train.epochs": 12,  # long enough to be interrupted after the first checkpoint
        "train.patience": 12,
        "train.batch_size": 8,
    }
    (project / "params.yaml").write_text(yaml.safe_dump(apply_overrides(raw, settings)))
    return project


# Loaded by the first run only (a sitecustomize on its PYTHONPATH): after the first checkpoint
# is saved, training waits for the test's Ctrl-C instead of racing it, so the interrupt lands
# after the checkpoint on any machine, however loaded; the real handler does the rest.
WAIT_AFTER_FIRST_CHECKPOINT = """
import os
import pathlib
import time
import petsml.training.finetune as finetune

_epoch = finetune._train_epoch
_calls = []


def _wait_before_epoch_two(*args, **kwargs):
    _calls.append(1)
    if len(_calls) == 2:  # epoch 1 is trained, checkpointed and recorded
        pathlib.Path(os.environ["PETS_TEST_WAITING"]).touch()  # the test's cue for Ctrl-C
        time.sleep(300)  # interrupted by the test's SIGINT
    return _epoch(*args, **kwargs)


finetune._train_epoch = _wait_before_epoch_two
"""


def _train(project: Path, hook: Path | None = None) -> subprocess.Popen:
    env = tool_env(OMP_NUM_THREADS="1", PETS_LOG_LEVEL="INFO")
    if hook is not None:
        hook.mkdir(parents=True, exist_ok=True)
        (hook / "sitecustomize.py").write_text(WAIT_AFTER_FIRST_CHECKPOINT)
        env["PYTHONPATH"] = f"{hook}{os.pathsep}{env['PYTHONPATH']}"
        env["PETS_TEST_WAITING"] = str(hook / "waiting")
    return subprocess.Popen(
        [sys.executable, "-m", "stages.train", STRATEGY, "--resume"],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # as from a terminal: Ctrl-C delivered (a SIGINT disposition of "ignore" is inherited,
        # and some earlier test in this process may have left it set)
        preexec_fn=_default_sigint,
    )


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_says_what_was_saved_in_one_line_exits_130_and_the_rerun_resumes(tmp_path):
    project = _tiny_project(tmp_path)
    checkpoint = project / "data" / "checkpoints" / STRATEGY / "last.pt"
    proc = _train(project, hook=tmp_path / "hook")
    deadline = time.monotonic() + 300
    waiting = tmp_path / "hook" / "waiting"  # in Python code, between epochs: no race
    while not waiting.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert checkpoint.exists(), proc.communicate(timeout=60)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)

    assert proc.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    notes = [line for line in stderr.splitlines() if "INTERRUPTED" in line]
    assert len(notes) == 1, stderr[-3000:]
    assert "data/checkpoints/scratch/last.pt holds epoch" in notes[0]
    assert "`dvc repro` resumes" in notes[0]
    assert checkpoint.exists() and not (project / "models" / STRATEGY).exists()

    rerun = _train(project)
    _, stderr = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, stderr[-3000:]
    summary = read_json(project / "models" / STRATEGY / "summary.json")
    assert summary["resumed_from_epoch"] >= 1 and summary["epochs_run"] == 12
    assert not checkpoint.exists()
