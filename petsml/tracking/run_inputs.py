"""What the track stage logs, gathered and checked before any MLflow call.

Every strategy's model folder (read through :mod:`petsml.models.model_dir`), its entry of
``reports/metrics.json`` and its evaluation folder; the git commit and the DVC data hashes the
runs are tagged with; the params each strategy run depends on. A missing or unreadable input is
a :class:`TrackingError` naming the file and the stage that writes it.
"""

from __future__ import annotations

import hashlib
import logging
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from petsml import paths
from petsml.config import Params
from petsml.errors import PetsError
from petsml.evaluation.results import ResultsError, read_metrics
from petsml.io import load_yaml
from petsml.models.model_dir import ModelDirError, model_file, read_history, read_summary
from petsml.tracking.run_tags import (
    COMMON_SECTIONS,
    DVC_DATA_OUTS,
    TAG_RAW_HASH,
    UNKNOWN,
)

log = logging.getLogger(__name__)


class TrackingError(PetsError):
    """An input of the track stage is missing or malformed; the message names the file."""


@dataclass(frozen=True)
class StrategyFiles:
    strategy: str
    model_pt: Path
    history: dict[str, Any]
    summary: dict[str, Any]
    metrics: dict[str, Any]
    eval_dir: Path | None


# --------------------------------------------------------------------------- inputs and keys


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def git_commit(root: str | Path = ".") -> tuple[str, bool | None]:
    """(``git rev-parse HEAD``, working tree dirty?) or (``"unknown"``, None) outside git."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=30
        )
        if head.returncode != 0:
            return UNKNOWN, None
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=60,
        )
        dirty = bool(status.stdout.strip()) if status.returncode == 0 else None
        return head.stdout.strip() or UNKNOWN, dirty
    except (OSError, subprocess.SubprocessError):
        return UNKNOWN, None


def dvc_data_hashes(root: str | Path = ".", photos: str | None = None) -> dict[str, str]:
    """md5 of the ``data/splits`` and ``data/raw`` outs recorded in ``dvc.lock`` (or unknown).

    ``photos``: ``data.folder`` when it is not ``data/raw`` (an image folder): the raw hash is
    then the folder's, as the manifest stage's dep records it.
    """
    found = dict.fromkeys(DVC_DATA_OUTS, UNKNOWN)
    lock_path = Path(root) / "dvc.lock"
    try:
        lock = load_yaml(lock_path.read_text()) or {}
    except (OSError, ValueError):
        return found
    stages = lock.get("stages", {}) if isinstance(lock, dict) else {}
    wanted = {path: key for key, path in DVC_DATA_OUTS.items()}
    folder = None if photos is None else photos.rstrip("/")
    if folder == DVC_DATA_OUTS[TAG_RAW_HASH]:
        folder = None
    for stage in stages.values() if isinstance(stages, dict) else []:
        for out in (stage or {}).get("outs", []) or []:
            path = str(out.get("path", "")).rstrip("/")
            if path in wanted and out.get("md5") and not (folder and wanted[path] == TAG_RAW_HASH):
                found[wanted[path]] = str(out["md5"])
        for dep in (stage or {}).get("deps", []) or [] if folder else []:
            if str(dep.get("path", "")).rstrip("/") == folder and dep.get("md5"):
                found[TAG_RAW_HASH] = str(dep["md5"])
    return found


def _read_model_json(reader, model_dir: Path, fix: str) -> Any:
    """A model folder JSON file; the model folder's error becomes the track stage's."""
    try:
        return reader(model_dir)
    except ModelDirError as error:
        raise TrackingError(f"{error} {fix}") from None


def collect_strategy_files(params: Params, root: str | Path = ".") -> list[StrategyFiles]:
    """Check that every strategy has its model, history, summary, metrics; gather them."""
    root = Path(root)
    metrics_path = root / paths.METRICS
    try:
        metrics = read_metrics(root)
    except ResultsError as error:
        raise TrackingError(str(error)) from None
    found = []
    for strategy in params.train.strategies:
        model_dir = root / paths.model_dir(strategy)
        fix = f"Run `dvc repro train@{strategy}` first."
        model_pt = model_file(model_dir)
        if not model_pt.is_file():
            raise TrackingError(f"{model_pt}: missing. {fix}")
        if strategy not in metrics:
            raise TrackingError(
                f"{metrics_path}: no entry for strategy {strategy!r} (params.yaml "
                "train.strategies lists it). Run `dvc repro evaluate`."
            )
        eval_dir = next(
            (
                d
                for d in (root / paths.eval_dir(strategy), root / paths.REPORTS / strategy)
                if d.is_dir()
            ),
            None,
        )
        if eval_dir is None:
            log.warning("%s: no evaluation folder under %s; plots not logged", strategy, paths.EVAL)
        found.append(
            StrategyFiles(
                strategy=strategy,
                model_pt=model_pt,
                history=_read_model_json(read_history, model_dir, fix),
                summary=_read_model_json(read_summary, model_dir, fix),
                metrics=dict(metrics[strategy]),
                eval_dir=eval_dir,
            )
        )
    return found


def strategy_params(params: Params, strategy: str) -> dict[str, str]:
    """Flat params of the common sections plus ``strategy``'s section, and its name."""
    flat = {k: v for k, v in params.flat().items() if k.split(".", 1)[0] in COMMON_SECTIONS}
    settings = params.settings_of(strategy)
    for key, value in (settings.model_dump() if settings is not None else {}).items():
        flat[f"{strategy}.{key}"] = value
    flat["strategy"] = strategy
    return {key: str(value) for key, value in flat.items()}
