"""Run reuse: the key of a pipeline state and the finished runs already logged for it.

A run key (hash of metrics, model files, data hashes, splits and strategies) is stored as a tag
on the parent; tracking an unchanged pipeline again finds that parent and logs nothing new.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from petsml import paths
from petsml.config import Params
from petsml.tracking.run_inputs import StrategyFiles, dvc_data_hashes, sha256_file
from petsml.tracking.run_tags import (
    PARENT_ROLE,
    PARENT_TAG,
    TAG_ROLE,
    TAG_RUN_KEY,
    TAG_STRATEGY,
)


def run_key(params: Params, files: list[StrategyFiles], root: str | Path = ".") -> str:
    """Identity of what would be logged: same key, same runs."""
    root = Path(root)
    content = {
        "experiment": params.mlflow.experiment,
        "task": params.data.task,
        "strategies": list(params.train.strategies),
        "metrics_sha256": sha256_file(root / paths.METRICS),
        "models_sha256": {f.strategy: sha256_file(f.model_pt) for f in files},
        "dvc": dvc_data_hashes(root, params.data.folder),
        "splits_sha256": {
            name: sha256_file(root / paths.split_csv(name))
            for name in paths.SPLIT_NAMES
            if (root / paths.split_csv(name)).is_file()
        },
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


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
