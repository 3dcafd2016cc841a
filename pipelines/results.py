"""What a finished run produced, read back from its workspace before an isolated one goes away.

The stages write these files (paths from ``petsml.paths``); the flows only read them, and a
missing or unreadable one reads as ``None`` (a run with ``--targets split`` has no metrics).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def find_parent_run_id(runs: Any) -> str | None:
    """The MLflow parent run id in ``reports/mlflow_runs.json``, whatever its exact layout."""
    if isinstance(runs, Mapping):
        for key in ("parent_run_id", "parent_id", "run_id"):
            if isinstance(runs.get(key), str):
                return runs[key]
        parent = runs.get("parent")
        if isinstance(parent, str):
            return parent
        if isinstance(parent, Mapping):
            return find_parent_run_id(parent)
    return None


def collect_results(workspace: Path) -> dict[str, Any]:
    """What a run produced, read from the workspace before it goes away."""
    from petsml import paths

    summaries = {}
    models = workspace / paths.MODELS
    if models.is_dir():
        for summary in sorted(models.glob("*/summary.json")):
            summaries[summary.parent.name] = _read_json(summary)
    runs = _read_json(workspace / paths.MLFLOW_RUNS)
    return {
        "metrics": _read_json(workspace / paths.METRICS),
        "summaries": summaries,
        "mlflow_parent_run_id": find_parent_run_id(runs),
        "registry": _read_json(workspace / paths.REGISTRY_REPORT),
    }
