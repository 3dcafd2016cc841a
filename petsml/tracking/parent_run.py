"""The parent run and the MLflow UI views over one pipeline execution.

The parent, collapsed, still answers "what won": the chosen strategy (highest validation
accuracy, the registry's rule) as a tag and note, that strategy's metrics as its own, the
comparison table (``mlflow.log_table``) and figure, the validation report, the data issues
report (``data_issues/``) and pipeline files.
The experiment is tagged a model-training experiment (``mlflow.experimentKind``), and a shared
view (experiment tag ``mlflow.sharedViewState.strategies``) lists this execution's strategy runs
sorted by validation accuracy (the project's selection rule; test accuracy is a column beside
it) with the headline metric columns; :func:`ui_path` is its link.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from petsml import paths
from petsml.evaluation.results import (
    COLUMN_KEYS,
    COMPARISON_FILES,
    COMPARISON_PLOTS,
    read_comparison,
    rows_by_strategy,
)
from petsml.tracking.child_run import finite, log_metrics
from petsml.tracking.run_inputs import StrategyFiles
from petsml.tracking.run_tags import (
    CHILD_ROLE,
    COMPARISON_PNG,
    COMPARISON_TABLE,
    EXPERIMENT_KIND,
    EXPERIMENT_KIND_TAG,
    FINAL_STEP,
    PARENT_TAG,
    SHARED_VIEW_KEY,
    SHARED_VIEW_PREFIX,
    TAG_BACKBONE,
    TAG_CHOSEN,
    TAG_ROLE,
    UNKNOWN,
    VIEW_METRICS,
)

log = logging.getLogger(__name__)

# What the project selects by (register, the sweep, chosen_strategy): the view's sort key.
SELECTION_METRIC = "val_accuracy"


def chosen_strategy(metrics: dict[str, dict[str, Any]]) -> str | None:
    """The strategy with the highest validation accuracy (ties: first by name), as the registry
    picks its candidate; None when no strategy has one."""
    scored = {
        s: v for s, m in metrics.items() if (v := finite(m.get(SELECTION_METRIC))) is not None
    }
    return sorted(scored, key=lambda s: (-scored[s], s))[0] if scored else None


def comparison_frame(files: list[StrategyFiles], comparison: dict[str, Any] | None = None):
    """One row per strategy: its backbone, evaluated metrics and, when the compare stage wrote
    its report, that report's columns (latency, size, transfer gain, rank: read, not redone).
    The parent's MLflow table."""
    import pandas as pd

    compared = rows_by_strategy(comparison)
    rows = []
    for f in files:
        row = {
            "strategy": f.strategy,
            "backbone": str(f.summary.get("backbone") or UNKNOWN),
            **{k: finite(v) for k, v in f.metrics.items()},
        }
        extra = compared.get(f.strategy, {})
        for key in (*COLUMN_KEYS, "pareto"):
            if key not in row and key in extra:
                row[key] = extra[key]
        rows.append(row)
    return pd.DataFrame(rows)


def backbones_vary(client, experiment_id: str, files: list[StrategyFiles], default: str) -> bool:
    """Whether strategy runs of more than one backbone share the experiment (a sweep)."""
    mine = {str(f.summary.get("backbone") or default) for f in files}
    if len(mine) > 1:
        return True
    (backbone,) = mine
    other = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{TAG_ROLE}` = '{CHILD_ROLE}' and tags.{TAG_BACKBONE} != '{backbone}'",
        max_results=1,
    )
    return bool(other)


def ensure_experiment_kind(client, experiment_id: str) -> None:
    """Tag the experiment as model training (new and existing experiments alike)."""
    tags = client.get_experiment(experiment_id).tags
    if tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
        client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)


def shared_view_state(parent_run_id: str) -> dict[str, Any]:
    """The runs view a user should see first: this execution's strategies, best validation
    accuracy first, the order ``register`` and the sweep choose by (test accuracy only judges).

    Sorting by a metric lists child runs as rows of their own (sorted by time, the UI folds
    them under their parent); the columns are the headline metrics.
    """
    return {
        "searchFilter": f"tags.`{PARENT_TAG}` = '{parent_run_id}'",
        "orderByKey": f"metrics.`{SELECTION_METRIC}`",
        "orderByAsc": False,
        "selectedColumns": [f"metrics.`{key}`" for key in VIEW_METRICS]
        + [f"tags.`{TAG_BACKBONE}`"],
    }


def set_shared_view(client, experiment_id: str, parent_run_id: str) -> None:
    value = json.dumps(shared_view_state(parent_run_id), sort_keys=True)
    key = SHARED_VIEW_PREFIX + SHARED_VIEW_KEY
    if client.get_experiment(experiment_id).tags.get(key) != value:
        client.set_experiment_tag(experiment_id, key, value)


def ui_path(experiment_id: str) -> str:
    """Path (after ``http://<mlflow ui host>``) of the shared strategies view.

    ``workflowType=machine_learning`` opens the model-training side of MLflow 3's UI, whatever
    the browser last chose in its GenAI / Model training switch.
    """
    return (
        f"/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
        f"&viewStateShareKey={SHARED_VIEW_KEY}"
    )


def log_parent_summary(client, run_id: str, files: list[StrategyFiles], root: Path) -> None:
    """The chosen strategy, its metrics as the parent's own, the comparison table and figure."""
    import mlflow

    by_strategy = {f.strategy: f.metrics for f in files}
    chosen = chosen_strategy(by_strategy)
    comparison = read_comparison(root, required=False)
    table = comparison_frame(files, comparison)
    mlflow.log_table(table, artifact_file=COMPARISON_TABLE)
    figure = root / paths.EVAL / COMPARISON_PNG
    if figure.is_file():
        mlflow.log_artifact(str(figure), artifact_path="comparison")
    log_comparison_report(root)
    if chosen is None:
        log.warning("no strategy has a val_accuracy: the parent run names no chosen strategy")
        return
    mlflow.set_tags({TAG_CHOSEN: chosen})
    log_metrics(client, run_id, [(k, v, FINAL_STEP) for k, v in by_strategy[chosen].items()])
    lines = [
        f"Chosen strategy: **{chosen}** (highest validation accuracy); its metrics are this "
        "run's own. Strategies (one child run each):",
        "",
        "| strategy | " + " | ".join(VIEW_METRICS) + " |",
        "| --- |" + " --- |" * len(VIEW_METRICS),
    ]
    for f in files:
        cells = (finite(f.metrics.get(k)) for k in VIEW_METRICS)
        lines.append(
            f"| {f.strategy} | "
            + " | ".join("-" if c is None else f"{c:.4g}" for c in cells)
            + " |"
        )
    advice = (comparison or {}).get("advice") or {}
    if advice.get("statement"):
        lines += ["", f"Advice check: {advice['statement']} (artifact `comparison/comparison.md`)"]
    mlflow.set_tag("mlflow.note.content", "\n".join(lines))


def log_comparison_report(root: Path) -> None:
    """The compare stage's report (Markdown, offline HTML, JSON, figures) under ``comparison/``;
    nothing when the stage has not run."""
    import mlflow

    for path in COMPARISON_FILES:
        if (root / path).is_file():
            mlflow.log_artifact(str(root / path), artifact_path="comparison")
    figures = root / COMPARISON_PLOTS
    if figures.is_dir():
        for png in sorted(figures.glob("*.png")):
            mlflow.log_artifact(str(png), artifact_path="comparison")


def log_parent_artifacts(root: Path) -> None:
    import mlflow

    validation = root / paths.VALIDATION_REPORTS
    summary = validation / "summary.json"
    if summary.is_file():
        mlflow.log_artifact(str(summary), artifact_path="validation")
    docs = validation / "data_docs"
    if docs.is_dir():
        mlflow.log_artifacts(str(docs), artifact_path="validation/data_docs")
    for name in ("params.yaml", "dvc.lock", "dvc.yaml", paths.METRICS.as_posix()):
        if (root / name).is_file():
            mlflow.log_artifact(str(root / name), artifact_path="pipeline")
    log_advice(root)
    for path in (paths.DATA_ISSUES_JSON, paths.DATA_ISSUES_MD, paths.DATA_ISSUES_HTML):
        if (root / path).is_file():  # what is wrong with the data (the data_issues stage)
            mlflow.log_artifact(str(root / path), artifact_path="data_issues")


def log_advice(root: Path) -> None:
    """The advise stage's answer on the parent run: its files, and the cell and strategy as tags
    so runs can be searched by advice (``tags.advice_strategy = 'feature_extractor'``)."""
    import mlflow

    from petsml.io import read_json

    advice = root / paths.ADVICE
    if not advice.is_file():
        return
    record = read_json(advice)
    mlflow.set_tags({"advice_cell": record.get("cell"), "advice_strategy": record.get("strategy")})
    for path in (advice, root / paths.ADVICE_MD):
        if path.is_file():
            mlflow.log_artifact(str(path), artifact_path="advice")
    if (root / paths.ADVICE_PLOTS).is_dir():
        mlflow.log_artifacts(str(root / paths.ADVICE_PLOTS), artifact_path="advice")
