"""What one strategy's nested run logs: params, final metrics, curves, datasets, artifacts, model.

Final metrics sit at one step (``FINAL_STEP``) so the UI's default charts compare strategies as
bars; per-epoch curves go under ``epoch/<key>`` (step = epoch) and the C search under
``search/<key>`` (step = index), so no final metric gets a history. The parent run logs its
datasets through :func:`log_datasets` too.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import warnings
from pathlib import Path
from typing import Any

from petsml import paths
from petsml.config import Params
from petsml.models.model_dir import history_file, summary_file
from petsml.tracking.run_inputs import StrategyFiles, strategy_params
from petsml.tracking.run_tags import (
    CHILD_ROLE,
    CURVES,
    EPOCH_PREFIX,
    FINAL_STEP,
    MODEL_NAME,
    SEARCH_PREFIX,
    SPLIT_CONTEXT,
    TAG_BACKBONE,
    TAG_ROLE,
    TAG_STRATEGY,
    TAG_TASK,
    UNKNOWN,
)

log = logging.getLogger(__name__)


def finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number and abs(number) != float("inf") else None


def log_metrics(client, run_id: str, rows: list[tuple[str, Any, int]]) -> None:
    """Log (key, value, step) rows in batches; non-numeric values are skipped."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = [
        Metric(key=key, value=number, timestamp=now, step=int(step))
        for key, value, step in rows
        if (number := finite(value)) is not None
    ]
    for start in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[start : start + 1000])


def _curve_rows(history: dict[str, Any]) -> list[tuple[str, Any, int]]:
    """Per-epoch and per-C series, under their own keys so no final metric gets a history."""
    rows = []
    for record in history.get("epochs") or []:
        step = int(record["epoch"])
        rows += [(EPOCH_PREFIX + key, record[key], step) for key in CURVES if key in record]
    for index, record in enumerate(history.get("search") or []):
        rows += [(SEARCH_PREFIX + key, value, index) for key, value in record.items()]
    return rows


def child_run_name(strategy: str, backbone: str, name_backbone: bool) -> str:
    return f"{strategy} ({backbone})" if name_backbone else strategy


def list_datasets(params: Params, root: Path) -> list[tuple[Any, str]]:
    """(MLflow dataset, context) for each split CSV present."""
    import mlflow
    from mlflow.data.dataset_source_registry import get_dataset_source_from_json

    from petsml.data.split import load_split

    out = []
    for name in paths.SPLIT_NAMES:
        relative = paths.split_csv(name)
        csv = root / relative
        if not csv.is_file():
            log.warning("%s missing: dataset input %r not logged", csv, name)
            continue
        source = get_dataset_source_from_json(
            json.dumps({"uri": relative.as_posix()}), source_type="local"
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # integer-column schema hint
            dataset = mlflow.data.from_pandas(
                load_split(csv, params.data.task),
                source=source,
                targets="label",
                name=f"{params.mlflow.experiment}-{params.data.task}-{name}",
                digest=hashlib.md5(csv.read_bytes()).hexdigest(),
            )
        out.append((dataset, SPLIT_CONTEXT[name]))
    return out


def log_datasets(datasets: list[tuple[Any, str]]) -> None:
    import mlflow

    if not datasets:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # integer-column schema hint, again
        mlflow.log_inputs(
            datasets=[d for d, _ in datasets],
            contexts=[c for _, c in datasets],
            tags_list=[None] * len(datasets),  # MLflow 3.x: all three lists, same length
        )


def example_image(root: Path, image_root: str | Path = paths.RAW) -> Path | None:
    """A real test image for the model's input example, when the photos (``data.folder``,
    relative to ``root`` or absolute) are here."""
    csv = root / paths.split_csv("test")
    if not csv.is_file():
        return None
    import pandas as pd

    try:
        files = pd.read_csv(csv, usecols=["file"], keep_default_na=False)["file"]
    except (ValueError, OSError):
        return None
    for name in files[:20]:
        candidate = root / image_root / name
        if candidate.is_file():
            return candidate
    return None


def log_child(
    client,
    params: Params,
    files: StrategyFiles,
    tags: dict[str, str],
    datasets: list[tuple[Any, str]],
    example: Path | None,
    experiment_id: str,
    name_backbone: bool = False,
    index: Path | None = None,
    reference: Path | None = None,
) -> tuple[str, str]:
    """One nested strategy run; returns (run id, model id). ``index``: the model's neighbour
    index file (:mod:`petsml.tracking.neighbour_files`), ``reference``: its monitoring reference
    (:mod:`petsml.tracking.reference_files`), both shipped inside the logged model with
    params.yaml's ``monitor:`` section (its model_config: the served model records its answers)."""
    import mlflow

    from petsml.tracking.pyfunc import InputLimits, log_pyfunc_model

    summary = files.summary
    child_tags = {
        **tags,
        TAG_ROLE: CHILD_ROLE,
        TAG_STRATEGY: files.strategy,
        TAG_BACKBONE: str(summary.get("backbone") or params.model.backbone),
        TAG_TASK: str(summary.get("task") or params.data.task),
        "device": str(summary.get("device", UNKNOWN)),
    }
    name = child_run_name(files.strategy, child_tags[TAG_BACKBONE], name_backbone)
    with mlflow.start_run(
        experiment_id=experiment_id, run_name=name, nested=True, tags=child_tags
    ) as run:
        run_id = run.info.run_id
        logged = strategy_params(params, files.strategy)
        for key, value in (summary.get("params") or {}).items():
            logged[f"fit.{key}"] = str(value)
        mlflow.log_params(logged)
        step = FINAL_STEP
        rows = _curve_rows(files.history)
        rows += [(key, value, step) for key, value in files.metrics.items()]
        for key in ("best_epoch", "epochs_run"):
            if summary.get(key) is not None:
                rows.append((key, summary[key], step))
        log_metrics(client, run_id, rows)
        log_datasets(datasets)
        if files.eval_dir is not None:
            mlflow.log_artifacts(str(files.eval_dir), artifact_path="eval")
        for path in (history_file(files.model_pt.parent), summary_file(files.model_pt.parent)):
            if path.is_file():
                mlflow.log_artifact(str(path), artifact_path="training")
        info = log_pyfunc_model(
            files.model_pt,
            limits=InputLimits(
                max_pixels=params.serve.max_pixels, max_bytes=params.serve.max_bytes
            ),  # fmt: skip
            name=MODEL_NAME,
            input_example_image=example,
            step=step,
            tags={TAG_STRATEGY: files.strategy, TAG_TASK: child_tags[TAG_TASK]},
            index=index,
            reference=reference,
            monitor=params.monitor.model_dump(),
            model_name=params.registered_model_name,
        )
    log.info("%s: run %s, model %s", files.strategy, run_id, info.model_uri)
    return run_id, info.model_id
