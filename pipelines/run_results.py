"""What a finished run produced, read back from its workspace before an isolated one goes away.

The stages write these files (paths from ``petsml.paths``; the metrics and the comparison report
through their one reader, :mod:`petsml.evaluation.results`); the flows only read them, and a
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


def collect_results(workspace: Path) -> dict[str, Any]:
    """What a run produced, read from the workspace before it goes away."""
    from petsml import paths
    from petsml.evaluation.results import read_comparison, read_metrics
    from petsml.models.model_dir import SUMMARY_FILE

    summaries = {}
    models = workspace / paths.MODELS
    if models.is_dir():
        for summary in sorted(models.glob(f"*/{SUMMARY_FILE}")):
            summaries[summary.parent.name] = _read_json(summary)
    runs = _read_json(workspace / paths.MLFLOW_RUNS)
    return {
        "metrics": read_metrics(workspace, required=False),
        "comparison": read_comparison(workspace, required=False),
        "summaries": summaries,
        "mlflow_parent_run_id": runs.get("parent_run_id") if isinstance(runs, Mapping) else None,
        "registry": _read_json(workspace / paths.REGISTRY_REPORT),
    }


def logged_by_member(project: Path, experiment: str) -> dict[str, Any]:
    """What a member run on a work pool recorded, read back where the sweep runs: its DVC
    experiment (``experiment``: metrics, the commit) and the MLflow parent run named in that
    experiment's ``reports/mlflow_runs.json``. Empty when the experiment is not here (a
    worker on another machine that has not ``dvc exp push``-ed it yet)."""
    from petsml import paths
    from pipelines.dvc_graph import experiments
    from pipelines.shell import git

    found = experiments(project).get(experiment)
    if found is None:
        return {}
    folder = f"{paths.REPORTS.as_posix()}/metrics/"  # the evaluate stage's DVC metrics
    metrics = {
        path.removeprefix(folder).removesuffix(".json"): data
        for path, data in found["metrics"].items()
        if path.startswith(folder) and path.endswith(".json")
    }
    try:
        runs = json.loads(git(project, "show", f"{found['rev']}:{paths.MLFLOW_RUNS.as_posix()}"))
    except (RuntimeError, OSError, ValueError):
        runs = None
    return {
        "metrics": metrics or None,
        "experiment": {"name": experiment, "rev": found["rev"], "baseline": found["baseline"]},
        "mlflow_parent_run_id": runs.get("parent_run_id") if isinstance(runs, Mapping) else None,
        "mlflow_children": runs.get("children") if isinstance(runs, Mapping) else None,
    }
