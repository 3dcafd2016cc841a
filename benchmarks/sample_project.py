"""A throw-away copy of this repo whose pipeline reads a folder of photos in the official layout.

The benchmarks that run the real pipeline on real photos (``../shared/pets-sample``: ~10 per
breed) all need the same set-up: the folder packed as the official archives, ``data.base_url``
pointed at them, the per-breed bounds opened for a sample, and an MLflow store of its own. One
home for it, so the benchmarks differ only in what they run and print.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from petsml.testing.fakedata import pack_archives
from petsml.testing.project import dvc, fake_data_params, make_project, tool_env

ROOT = Path(__file__).resolve().parents[1]

DEFAULT_SAMPLE = ROOT.parent / "shared" / "pets-sample"
SAMPLE_PARAMS = {
    "decode.size": 256,
    "validate.min_images_per_breed": 1,  # a sample, not the whole dataset
    "validate.max_images_per_breed": 250,
}


def sample_project(
    folder: Path, work: Path, overrides: dict[str, Any] | None = None
) -> tuple[Path, dict[str, str]]:
    """The project under ``work/p`` reading ``folder``, and the environment its tools run in."""
    md5 = pack_archives(Path(folder), work / "mirror")
    params = fake_data_params(str(work / "mirror"), md5) | SAMPLE_PARAMS | (overrides or {})
    params.pop("compare.latency_budget_s")  # the tests' shortcut: benchmarks time as shipped
    project = make_project(work / "p", params)
    return project, tool_env(MLFLOW_TRACKING_URI=f"sqlite:///{work}/mlflow.db")


def repro(project: Path, env: dict[str, str], *targets: str) -> float:
    """``dvc repro [targets]`` in ``project``; returns its wall seconds."""
    started = time.perf_counter()
    dvc(project, "repro", *targets, env=env, timeout=7200)
    return time.perf_counter() - started
