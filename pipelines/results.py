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
