"""Epoch checkpoints: what a resumed run continues from, and when it must not.

A checkpoint is written atomically after every epoch (outside the DVC output, which DVC deletes
before re-running a stage) and is resumed only when its fingerprint, a hash of every setting, of
the training code (:func:`code_digest`) and of the ids, labels and decoded pixels the run trains
on, still matches. Ctrl-C raises :class:`TrainingInterrupted`, which says which checkpoint a
rerun resumes from.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from petsml.config import Params
from petsml.io import atomic_path
from petsml.training.loop import Progress, SplitData, cpu_state

log = logging.getLogger(__name__)

CHECKPOINT = "last.pt"
CHECKPOINT_VERSION = 2  # 2: the fingerprint covers the code and the decoded pixels

# The petsml sources the trained weights depend on (relative to PACKAGE_ROOT): a checkpoint made
# by other code is not resumed. Tracking, evaluation and the stages cannot change the weights.
# Folders are hashed whole, so a new module under training/ changes the digest too.
PACKAGE_ROOT = Path(__file__).resolve().parents[1]
CODE = ("training", "models", "data", "config.py", "errors.py", "io.py", "paths.py")


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training; ``saved`` says in one sentence what is on disk to resume from.

    A KeyboardInterrupt still (so nothing treats it as a failure to report), which
    :func:`petsml.stage.run_stage` turns into that sentence and exit code 130.
    """

    def __init__(self, saved: str) -> None:
        super().__init__(saved)
        self.saved = saved


def interrupted(strategy: str, path: Path, saved_epoch: int | None, epochs: int) -> str:
    """The sentence :class:`TrainingInterrupted` carries: what a rerun starts from."""
    if saved_epoch is not None:
        return (
            f"{strategy} interrupted: {path} holds epoch {saved_epoch} of "
            f"{epochs}; `dvc repro` resumes from it"
        )
    return f"{strategy} interrupted before its first epoch was saved; `dvc repro` starts it again"


def code_digest(root: Path | None = None) -> str:
    """sha256 of the petsml sources training runs (:data:`CODE` under ``root``, default the
    installed package): names and bytes, so an edit, a new or a deleted module changes it."""
    root = Path(root or PACKAGE_ROOT)
    digest = hashlib.sha256()
    for name in CODE:
        path = root / name
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path] if path.exists() else []
        for file in files:
            digest.update(file.relative_to(root).as_posix().encode() + b"\0")
            digest.update(hashlib.sha256(file.read_bytes()).digest())
    return digest.hexdigest()


def fingerprint(
    strategy: str, params: Params, train: SplitData, val: SplitData, size: int, code: str = ""
) -> str:
    """Hash of every setting and input the trained weights depend on (not device or workers):
    params, ``code`` (:func:`code_digest`), image ids, labels and the decoded pixels themselves
    (sha256 of the in-memory arrays: ~1 s per GB with SHA extensions, against minutes of
    training; a re-decoded or replaced photo changes it even when its id does not)."""
    t = params.train
    relevant = {
        "version": CHECKPOINT_VERSION,
        "strategy": strategy,
        "task": params.data.task,
        "model": params.model.model_dump(),
        "strategy_params": _dump(params.settings_of(strategy)),
        "train": {
            "seed": t.seed,
            "epochs": t.epochs,
            "batch_size": t.batch_size,
            "patience": t.patience,
            "warmup_epochs": t.warmup_epochs,
        },
        "decode_size": size,
        "code": code,
    }
    digest = hashlib.sha256(json.dumps(relevant, sort_keys=True).encode())
    for data in (train, val):
        digest.update("\n".join(data.image_ids).encode())
        digest.update(data.labels.tobytes())
        digest.update(memoryview(np.ascontiguousarray(data.images)).cast("B"))
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------
# Random state


def rng_state(generator: torch.Generator) -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "augment": generator.get_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    generator.set_state(state["augment"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    random.setstate(state["python"])


def _python_rng(value: Any) -> Any:
    """torch.load(weights_only) returns tuples as lists; random.setstate needs tuples."""
    return tuple(_python_rng(v) for v in value) if isinstance(value, list | tuple) else value


# --------------------------------------------------------------------------------------------
# Save, load, resume


def remove_partial_files(checkpoint_dir: Path) -> list[Path]:
    """Delete the temp files (``.last.pt.<random>.pt``) of writes that never finished: a run
    killed while saving (SIGKILL, power loss) leaves one, tens of MB, that nothing else would
    ever remove. Only one run trains a strategy at a time (DVC's lock), so on start every such
    file is an earlier run's."""
    removed = []
    for partial in Path(checkpoint_dir).glob(f".{CHECKPOINT}.*.pt"):
        partial.unlink(missing_ok=True)
        removed.append(partial)
    if removed:
        log.info("removed %d partial checkpoint file(s) of an earlier run in %s", len(removed),
                 checkpoint_dir)  # fmt: skip
    return removed


def save_checkpoint(
    path: Path,
    fp: str,
    strategy: str,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    progress: Progress,
    generator: torch.Generator,
) -> None:
    """Everything the run after the last recorded epoch needs, written atomically (a partial
    file of an earlier, killed run goes first: this run's first write is its start on disk)."""
    remove_partial_files(path.parent)
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(
            {
                "fingerprint": fp,
                "strategy": strategy,
                "epoch": progress.history[-1]["epoch"],
                "model": cpu_state(model),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "best": progress.best,
                "bad_epochs": progress.bad_epochs,
                "stopped_early": progress.stopped_early,
                "history": progress.history,
                "rng": rng_state(generator),
            },
            tmp,
        )


def load_checkpoint(path: Path, expected: str) -> dict[str, Any] | None:
    """The checkpoint at ``path`` when it exists, loads and has the ``expected`` fingerprint.
    Called as a run starts, so the partial files of earlier, killed runs are removed here."""
    remove_partial_files(path.parent)
    if not path.exists():
        log.info("no checkpoint at %s: starting fresh", path)
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a torn or foreign file is not worth dying for
        log.warning("checkpoint %s unreadable (%s): starting fresh", path, error)
        return None
    if state.get("fingerprint") != expected:
        log.info(
            "checkpoint %s was made with other params or data (fingerprint %.12s, now %.12s): "
            "starting fresh",
            path,
            state.get("fingerprint"),
            expected,
        )
        return None
    state["rng"]["python"] = _python_rng(state["rng"]["python"])
    return state


def restore(
    state: dict[str, Any],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    generator: torch.Generator,
) -> Progress:
    """Load a checkpoint's weights, optimiser, schedule and random state; its :class:`Progress`."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"], generator)
    return Progress(
        history=state["history"],
        best=state["best"],
        bad_epochs=state["bad_epochs"],
        stopped_early=state["stopped_early"],
        next_epoch=state["epoch"] + 1,
        resumed_from=state["epoch"],
    )


def remove_checkpoint(checkpoint_dir: Path) -> None:
    """Delete the checkpoint once the model folder is written (and any partial file beside it),
    and its folder when empty."""
    (checkpoint_dir / CHECKPOINT).unlink(missing_ok=True)
    remove_partial_files(checkpoint_dir)
    try:
        checkpoint_dir.rmdir()  # only when nothing else lives there
    except OSError:
        pass


def _dump(settings) -> dict:
    return settings.model_dump() if settings is not None else {}
