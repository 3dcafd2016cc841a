"""Names the track stage's MLflow runs share: tag keys, roles, metric prefixes, view settings.

Plain tag names are the ones meant for searching (``tags.strategy = 'svm_early'``); the run
inputs, both kinds of run and the run lookup all read them from here so they cannot drift.
"""

from __future__ import annotations

from petsml import paths

UNKNOWN = "unknown"
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
