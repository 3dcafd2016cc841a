"""Record one pipeline execution in MLflow: a parent run, one nested child run per strategy.

Laid out for the MLflow UI a user opens first:

* the experiment is tagged a model-training experiment (``mlflow.experimentKind``), and a shared
  view (experiment tag ``mlflow.sharedViewState.strategies``) lists this execution's strategy
  runs sorted by test accuracy with the headline metric columns; :func:`ui_path` is its link;
* each child (named by its strategy, plus the backbone when the experiment holds several)
  carries its params, the evaluated metrics of ``reports/metrics.json`` as single values at
  step 0 (so the default charts are bar charts comparing strategies), per-epoch curves under
  ``epoch/<key>`` (step = epoch) and the C search under ``search/<key>`` (step = index), the
  evaluation plots and tables, the split CSVs as dataset inputs, and the model as a pyfunc
  LoggedModel;
* the parent, collapsed, still answers "what won": the chosen strategy (highest validation
  accuracy, the registry's rule) as a tag and note, that strategy's metrics as its own, the
  comparison table (``mlflow.log_table``) and figure, the validation report and pipeline files.

A run key (hash of metrics, model files, data hashes, splits and strategies) is stored as a tag
on the parent; tracking an unchanged pipeline again finds that parent and logs nothing new.
"""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from petsml import paths
from petsml.config import Params
from petsml.errors import PetsError
from petsml.io import read_json, write_json
from petsml.tracking import store

log = logging.getLogger(__name__)

UNKNOWN = "unknown"
# Tag keys. Plain names are the ones meant for searching (tags.strategy = 'svm_early').
TAG_RUN_KEY = "run_key"
TAG_ROLE = "petsml.role"  # "pipeline" on the parent, "strategy" on the children
TAG_STRATEGY = "strategy"
TAG_BACKBONE = "backbone"
TAG_TASK = "task"
TAG_GIT_COMMIT = "git_commit"
TAG_GIT_DIRTY = "git_dirty"
TAG_DATA_HASH = "dvc_data_hash"  # md5 of data/splits in dvc.lock
TAG_RAW_HASH = "dvc_raw_hash"  # md5 of data/raw in dvc.lock
PARENT_ROLE = "pipeline"
CHILD_ROLE = "strategy"
PARENT_TAG = "mlflow.parentRunId"
TAG_CHOSEN = "chosen_strategy"  # on the parent: the strategy with the best val_accuracy
MODEL_NAME = "model"
# The MLflow UI reads this experiment tag to tell model-training from GenAI experiments.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
# A shared runs view is an experiment tag "mlflow.sharedViewState.<key>" that the UI opens for
# ...?viewStateShareKey=<key> (what its "Share" button writes); one fixed key, updated per run.
SHARED_VIEW_PREFIX = "mlflow.sharedViewState."
SHARED_VIEW_KEY = "strategies"
# Metrics every child logs at step 0 and the parent logs for its chosen strategy; the first
# four are the columns of the shared view.
VIEW_METRICS = ("val_accuracy", "test_accuracy", "test_macro_f1", "train_seconds")
COMPARISON_TABLE = "comparison/strategies.json"
COMPARISON_PNG = "strategies.png"  # written by the evaluate stage into reports/eval/

# params.yaml sections every strategy run depends on; the strategy's own section is added.
COMMON_SECTIONS = ("data", "validate", "split", "decode", "model", "features", "train", "evaluate")
CURVES = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds")
EPOCH_PREFIX = "epoch/"  # per-epoch curves: epoch/val_accuracy is not the final val_accuracy
SEARCH_PREFIX = "search/"  # frozen-feature strategies: one point per C tried
FINAL_STEP = 0  # every final metric at the same step: the UI compares them as bars
SPLIT_CONTEXT = {"train": "training", "val": "validation", "test": "test"}
DVC_DATA_OUTS = {TAG_DATA_HASH: paths.SPLITS.as_posix(), TAG_RAW_HASH: paths.RAW.as_posix()}


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


def dvc_data_hashes(root: str | Path = ".") -> dict[str, str]:
    """md5 of the ``data/splits`` and ``data/raw`` outs recorded in ``dvc.lock`` (or unknown)."""
    import yaml

    found = dict.fromkeys(DVC_DATA_OUTS, UNKNOWN)
    lock_path = Path(root) / "dvc.lock"
    try:
        lock = yaml.safe_load(lock_path.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return found
    stages = lock.get("stages", {}) if isinstance(lock, dict) else {}
    wanted = {path: key for key, path in DVC_DATA_OUTS.items()}
    for stage in stages.values() if isinstance(stages, dict) else []:
        for out in (stage or {}).get("outs", []) or []:
            path = str(out.get("path", "")).rstrip("/")
            if path in wanted and out.get("md5"):
                found[wanted[path]] = str(out["md5"])
    return found


def _read_json(path: Path, fix: str) -> Any:
    if not path.is_file():
        raise TrackingError(f"{path}: missing. {fix}")
    try:
        return read_json(path)
    except (OSError, ValueError) as error:
        raise TrackingError(f"{path}: not valid JSON ({error}). {fix}") from None


def collect_strategy_files(params: Params, root: str | Path = ".") -> list[StrategyFiles]:
    """Check that every strategy has its model, history, summary, metrics; gather them."""
    root = Path(root)
    metrics_path = root / paths.METRICS
    metrics = _read_json(metrics_path, "Run `dvc repro evaluate` first.")
    found = []
    for strategy in params.train.strategies:
        model_dir = root / paths.model_dir(strategy)
        fix = f"Run `dvc repro train@{strategy}` first."
        model_pt = model_dir / "model.pt"
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
                for d in (root / paths.REPORTS / "eval" / strategy, root / paths.REPORTS / strategy)
                if d.is_dir()
            ),
            None,
        )
        if eval_dir is None:
            log.warning("%s: no evaluation folder under reports/eval; plots not logged", strategy)
        found.append(
            StrategyFiles(
                strategy=strategy,
                model_pt=model_pt,
                history=_read_json(model_dir / "history.json", fix),
                summary=_read_json(model_dir / "summary.json", fix),
                metrics=dict(metrics[strategy]),
                eval_dir=eval_dir,
            )
        )
    return found


def run_key(params: Params, files: list[StrategyFiles], root: str | Path = ".") -> str:
    """Identity of what would be logged: same key, same runs."""
    root = Path(root)
    content = {
        "experiment": params.mlflow.experiment,
        "task": params.data.task,
        "strategies": list(params.train.strategies),
        "metrics_sha256": sha256_file(root / paths.METRICS),
        "models_sha256": {f.strategy: sha256_file(f.model_pt) for f in files},
        "dvc": dvc_data_hashes(root),
        "splits_sha256": {
            name: sha256_file(root / paths.split_csv(name))
            for name in paths.SPLIT_NAMES
            if (root / paths.split_csv(name)).is_file()
        },
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def strategy_params(params: Params, strategy: str) -> dict[str, str]:
    """Flat params of the common sections plus ``strategy``'s section, and its name."""
    keep = (*COMMON_SECTIONS, strategy)
    flat = {key: value for key, value in params.flat().items() if key.split(".", 1)[0] in keep}
    flat["strategy"] = strategy
    return {key: str(value) for key, value in flat.items()}


# --------------------------------------------------------------------------- MLflow side


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number and abs(number) != float("inf") else None


def _log_metrics(client, run_id: str, rows: list[tuple[str, Any, int]]) -> None:
    """Log (key, value, step) rows in batches; non-numeric values are skipped."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = [
        Metric(key=key, value=number, timestamp=now, step=int(step))
        for key, value, step in rows
        if (number := _finite(value)) is not None
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


def chosen_strategy(metrics: dict[str, dict[str, Any]]) -> str | None:
    """The strategy with the highest validation accuracy (ties: first by name), as the registry
    picks its candidate; None when no strategy has one."""
    scored = {s: v for s, m in metrics.items() if (v := _finite(m.get("val_accuracy"))) is not None}
    return sorted(scored, key=lambda s: (-scored[s], s))[0] if scored else None


def comparison_frame(files: list[StrategyFiles]):
    """One row per strategy: its backbone and evaluated metrics (the parent's MLflow table)."""
    import pandas as pd

    rows = [
        {
            "strategy": f.strategy,
            "backbone": str(f.summary.get("backbone") or UNKNOWN),
            **{k: _finite(v) for k, v in f.metrics.items()},
        }
        for f in files
    ]
    return pd.DataFrame(rows)


def child_run_name(strategy: str, backbone: str, name_backbone: bool) -> str:
    return f"{strategy} ({backbone})" if name_backbone else strategy


def _backbones_vary(client, experiment_id: str, files: list[StrategyFiles], default: str) -> bool:
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


# --------------------------------------------------------------------------- UI views


def ensure_experiment_kind(client, experiment_id: str) -> None:
    """Tag the experiment as model training (new and existing experiments alike)."""
    tags = client.get_experiment(experiment_id).tags
    if tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
        client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)


def shared_view_state(parent_run_id: str) -> dict[str, Any]:
    """The runs view a user should see first: this execution's strategies, best test first.

    Sorting by a metric lists child runs as rows of their own (sorted by time, the UI folds
    them under their parent); the columns are the headline metrics.
    """
    return {
        "searchFilter": f"tags.`{PARENT_TAG}` = '{parent_run_id}'",
        "orderByKey": "metrics.`test_accuracy`",
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


def _datasets(params: Params, root: Path) -> list[tuple[Any, str]]:
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


def _log_datasets(datasets: list[tuple[Any, str]]) -> None:
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


def _example_image(root: Path) -> Path | None:
    """A real test image for the model's input example, when the raw data is here."""
    csv = root / paths.split_csv("test")
    if not csv.is_file():
        return None
    import pandas as pd

    try:
        files = pd.read_csv(csv, usecols=["file"], keep_default_na=False)["file"]
    except (ValueError, OSError):
        return None
    for name in files[:20]:
        candidate = root / paths.RAW / name
        if candidate.is_file():
            return candidate
    return None


def find_existing(client, experiment_id: str, key: str, strategies: list[str]) -> dict | None:
    """The record of a finished parent run with ``key`` whose children are all complete."""
    parents = client.search_runs(
        [experiment_id],
        filter_string=(
            f"tags.{TAG_RUN_KEY} = '{key}' and tags.`{TAG_ROLE}` = '{PARENT_ROLE}' "
            "and attributes.status = 'FINISHED'"
        ),
        order_by=["attributes.start_time DESC"],
    )
    for parent in parents:
        children = client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{PARENT_TAG}` = '{parent.info.run_id}'",
        )
        by_strategy = {
            c.data.tags.get(TAG_STRATEGY): c for c in children if c.info.status == "FINISHED"
        }
        model_ids = {}
        for strategy in strategies:
            child = by_strategy.get(strategy)
            outputs = child.outputs.model_outputs if child and child.outputs else []
            if not outputs:
                break
            model_ids[strategy] = outputs[-1].model_id
        else:
            return {
                "parent_run_id": parent.info.run_id,
                "children": {s: by_strategy[s].info.run_id for s in strategies},
                "model_ids": model_ids,
            }
    return None


def _log_parent_summary(client, run_id: str, files: list[StrategyFiles], root: Path) -> None:
    """The chosen strategy, its metrics as the parent's own, the comparison table and figure."""
    import mlflow

    by_strategy = {f.strategy: f.metrics for f in files}
    chosen = chosen_strategy(by_strategy)
    table = comparison_frame(files)
    mlflow.log_table(table, artifact_file=COMPARISON_TABLE)
    figure = root / paths.REPORTS / "eval" / COMPARISON_PNG
    if figure.is_file():
        mlflow.log_artifact(str(figure), artifact_path="comparison")
    if chosen is None:
        log.warning("no strategy has a val_accuracy: the parent run names no chosen strategy")
        return
    mlflow.set_tags({TAG_CHOSEN: chosen})
    _log_metrics(client, run_id, [(k, v, FINAL_STEP) for k, v in by_strategy[chosen].items()])
    lines = [
        f"Chosen strategy: **{chosen}** (highest validation accuracy); its metrics are this "
        "run's own. Strategies (one child run each):",
        "",
        "| strategy | " + " | ".join(VIEW_METRICS) + " |",
        "| --- |" + " --- |" * len(VIEW_METRICS),
    ]
    for f in files:
        cells = (_finite(f.metrics.get(k)) for k in VIEW_METRICS)
        lines.append(
            f"| {f.strategy} | "
            + " | ".join("-" if c is None else f"{c:.4g}" for c in cells)
            + " |"
        )
    mlflow.set_tag("mlflow.note.content", "\n".join(lines))


def _log_parent_artifacts(root: Path) -> None:
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


def _log_child(
    client,
    params: Params,
    files: StrategyFiles,
    tags: dict[str, str],
    datasets: list[tuple[Any, str]],
    example: Path | None,
    experiment_id: str,
    name_backbone: bool = False,
) -> tuple[str, str]:
    """One nested strategy run; returns (run id, model id)."""
    import mlflow

    from petsml.tracking.pyfunc import log_pyfunc_model

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
        _log_metrics(client, run_id, rows)
        _log_datasets(datasets)
        if files.eval_dir is not None:
            mlflow.log_artifacts(str(files.eval_dir), artifact_path="eval")
        for name in ("history.json", "summary.json"):
            path = files.model_pt.parent / name
            if path.is_file():
                mlflow.log_artifact(str(path), artifact_path="training")
        info = log_pyfunc_model(
            files.model_pt,
            name=MODEL_NAME,
            input_example_image=example,
            step=step,
            tags={TAG_STRATEGY: files.strategy, TAG_TASK: child_tags[TAG_TASK]},
        )
    log.info("%s: run %s, model %s", files.strategy, run_id, info.model_uri)
    return run_id, info.model_id


def track_pipeline(
    params: Params, root: str | Path = ".", out: str | Path | None = paths.MLFLOW_RUNS
) -> dict[str, Any]:
    """Log (or find) the runs of this pipeline state; write and return ``mlflow_runs.json``."""
    import mlflow
    from mlflow import MlflowClient

    root = Path(root)
    files = collect_strategy_files(params, root)
    key = run_key(params, files, root)
    uri = store.configure(root)
    experiment_id = store.get_or_create_experiment(params.mlflow.experiment, uri)
    client = MlflowClient(tracking_uri=uri)
    strategies = list(params.train.strategies)

    ensure_experiment_kind(client, experiment_id)
    found = find_existing(client, experiment_id, key, strategies)
    if found is not None:
        log.info(
            "pipeline state %s already tracked in run %s: nothing new logged",
            key[:12],
            found["parent_run_id"],
        )
    else:
        commit, dirty = git_commit(root)
        hashes = dvc_data_hashes(root)
        tags = {TAG_RUN_KEY: key, TAG_GIT_COMMIT: commit, TAG_TASK: params.data.task, **hashes}
        if dirty is not None:
            tags[TAG_GIT_DIRTY] = str(dirty).lower()
        if commit != UNKNOWN:
            tags["mlflow.source.git.commit"] = commit
        datasets = _datasets(params, root)
        example = _example_image(root)
        children: dict[str, str] = {}
        model_ids: dict[str, str] = {}
        parent_name = f"pipeline-{params.data.task}-{commit[:8] if commit != UNKNOWN else key[:8]}"
        with mlflow.start_run(
            experiment_id=experiment_id,
            run_name=parent_name,
            nested=mlflow.active_run() is not None,
            tags={**tags, TAG_ROLE: PARENT_ROLE, "strategies": ",".join(strategies)},
        ) as parent:
            mlflow.log_params(
                {
                    k: str(v)
                    for k, v in params.flat().items()
                    if k.split(".", 1)[0] in (*COMMON_SECTIONS, "mlflow")
                }
            )
            _log_datasets(datasets)
            _log_parent_artifacts(root)
            _log_parent_summary(client, parent.info.run_id, files, root)
            name_backbone = _backbones_vary(client, experiment_id, files, params.model.backbone)
            for item in files:
                children[item.strategy], model_ids[item.strategy] = _log_child(
                    client, params, item, tags, datasets, example, experiment_id, name_backbone
                )
        found = {
            "parent_run_id": parent.info.run_id,
            "children": children,
            "model_ids": model_ids,
        }
    record = {
        "tracking_uri": uri,
        "experiment_id": experiment_id,
        "experiment_name": params.mlflow.experiment,
        "parent_run_id": found["parent_run_id"],
        "children": found["children"],
        "model_ids": found["model_ids"],
        "model_uris": {s: f"models:/{m}" for s, m in found["model_ids"].items()},
        "run_model_uris": {s: f"runs:/{r}/{MODEL_NAME}" for s, r in found["children"].items()},
        "run_key": key,
        "ui_path": ui_path(experiment_id),
    }
    set_shared_view(client, experiment_id, found["parent_run_id"])
    log.info(
        "MLflow UI: `mlflow ui --backend-store-uri %s`, then open http://127.0.0.1:5000%s",
        uri,
        record["ui_path"],
    )
    if out is not None:
        write_json(root / out, record)
    return record
