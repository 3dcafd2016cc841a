"""Record one pipeline execution in MLflow: a parent run, one nested child run per strategy.

Laid out for the MLflow UI a user opens first:

* the experiment is tagged a model-training experiment (``mlflow.experimentKind``), and a shared
  view (experiment tag ``mlflow.sharedViewState.strategies``) lists this execution's strategy
  runs sorted by validation accuracy with the headline metric columns; :func:`ui_path` is its link;
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

import logging
import tempfile
from pathlib import Path
from typing import Any

from petsml import paths
from petsml.config import Params
from petsml.io import write_json
from petsml.models.classifier import read_spec
from petsml.tracking import store
from petsml.tracking.child_run import (
    child_run_name,
    example_image,
    list_datasets,
    log_child,
    log_datasets,
)
from petsml.tracking.neighbour_files import IndexFiles
from petsml.tracking.parent_run import (
    backbones_vary,
    chosen_strategy,
    comparison_frame,
    ensure_experiment_kind,
    log_parent_artifacts,
    log_parent_summary,
    set_shared_view,
    shared_view_state,
    ui_path,
)
from petsml.tracking.reference_files import ReferenceFiles
from petsml.tracking.run_inputs import (
    StrategyFiles,
    TrackingError,
    collect_strategy_files,
    dvc_data_hashes,
    git_commit,
    sha256_file,
    strategy_params,
)
from petsml.tracking.run_lookup import end_dead_runs, find_existing, process_tags, run_key
from petsml.tracking.run_tags import (
    COMMON_SECTIONS,
    MODEL_NAME,
    PARENT_ROLE,
    TAG_GIT_COMMIT,
    TAG_GIT_DIRTY,
    TAG_ROLE,
    TAG_RUN_KEY,
    TAG_TASK,
    UNKNOWN,
)

__all__ = [
    "StrategyFiles",
    "TrackingError",
    "child_run_name",
    "chosen_strategy",
    "collect_strategy_files",
    "comparison_frame",
    "dvc_data_hashes",
    "ensure_experiment_kind",
    "find_existing",
    "git_commit",
    "run_key",
    "set_shared_view",
    "sha256_file",
    "shared_view_state",
    "strategy_params",
    "track_pipeline",
    "ui_path",
]

log = logging.getLogger(__name__)


def _run_tags(params: Params, key: str, root: Path) -> dict[str, str]:
    """Tags of the parent and every child: run key, git commit (and dirtiness), DVC data hashes."""
    commit, dirty = git_commit(root)
    hashes = dvc_data_hashes(root, params.data.folder)
    tags = {TAG_RUN_KEY: key, TAG_GIT_COMMIT: commit, TAG_TASK: params.data.task, **hashes}
    if dirty is not None:
        tags[TAG_GIT_DIRTY] = str(dirty).lower()
    if commit != UNKNOWN:
        tags["mlflow.source.git.commit"] = commit
    return tags


def _log_new_runs(
    client, params: Params, files: list[StrategyFiles], key: str, experiment_id: str, root: Path
) -> dict[str, Any]:
    """The parent run and one child per strategy; returns their run and model ids."""
    import mlflow

    strategies = list(params.train.strategies)
    tags = _run_tags(params, key, root)
    commit = tags[TAG_GIT_COMMIT]
    datasets = list_datasets(params, root)
    example = example_image(root, params.data.folder)
    children: dict[str, str] = {}
    model_ids: dict[str, str] = {}
    parent_name = f"pipeline-{params.data.task}-{commit[:8] if commit != UNKNOWN else key[:8]}"
    with mlflow.start_run(
        experiment_id=experiment_id,
        run_name=parent_name,
        nested=mlflow.active_run() is not None,
        tags={**tags, **process_tags(), TAG_ROLE: PARENT_ROLE, "strategies": ",".join(strategies)},
    ) as parent:
        mlflow.log_params(
            {
                k: str(v)
                for k, v in params.flat().items()
                if k.split(".", 1)[0] in (*COMMON_SECTIONS, "mlflow")
            }
        )
        log_datasets(datasets)
        log_parent_artifacts(root)
        log_parent_summary(client, parent.info.run_id, files, root)
        name_backbone = backbones_vary(client, experiment_id, files, params.model.backbone)
        with tempfile.TemporaryDirectory(prefix="pets-neighbours-") as folder:
            indexes = IndexFiles(root, folder)
            references = ReferenceFiles(root, params.data.folder, folder,
                                        params.registered_model_name)  # fmt: skip
            for item in files:
                children[item.strategy], model_ids[item.strategy] = log_child(
                    client, params, item, tags, datasets, example, experiment_id, name_backbone,
                    index=indexes.index_for(item.strategy, read_spec(item.model_pt)),
                    reference=references.reference_for(item.strategy, item.model_pt),
                )  # fmt: skip
    return {"parent_run_id": parent.info.run_id, "children": children, "model_ids": model_ids}


def track_pipeline(
    params: Params, root: str | Path = ".", out: str | Path | None = paths.MLFLOW_RUNS
) -> dict[str, Any]:
    """Log (or find) the runs of this pipeline state; write and return ``mlflow_runs.json``."""
    from mlflow import MlflowClient

    root = Path(root)
    files = collect_strategy_files(params, root)
    key = run_key(params, files, root)
    uri = store.configure(root)
    experiment_id = store.get_or_create_experiment(params.mlflow.experiment, uri)
    client = MlflowClient(tracking_uri=uri)
    strategies = list(params.train.strategies)

    ensure_experiment_kind(client, experiment_id)
    end_dead_runs(client, experiment_id, key)  # what a killed track left RUNNING
    found = find_existing(client, experiment_id, key, strategies)
    if found is not None:
        log.info(
            "pipeline state %s already tracked in run %s: nothing new logged",
            key[:12],
            found["parent_run_id"],
        )
    else:
        found = _log_new_runs(client, params, files, key, experiment_id, root)
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
