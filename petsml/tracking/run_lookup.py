"""Run reuse: the key of a pipeline state and the finished runs already logged for it.

A run key (hash of metrics, model files, data hashes, splits and strategies) is stored as a tag
on the parent; tracking an unchanged pipeline again finds that parent and logs nothing new.

A tracking process killed half-way (SIGKILL, a closed laptop) leaves its parent run, and the
child it was logging, RUNNING forever: MLflow only ends a run its own process ends. The parent
records which process logs it (host, pid and the pid's start time, so a reused pid is not taken
for it); the next ``track`` marks such runs KILLED, with a tag saying why, before it logs the
execution anew, so the UI shows each execution once and none as still running.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
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

log = logging.getLogger(__name__)

TAG_HOST, TAG_PID, TAG_PID_START = "petsml.host", "petsml.pid", "petsml.pid_start"
TAG_ENDED = "petsml.ended"  # why a later track marked this run KILLED


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


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), None when it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def process_tags() -> dict[str, str]:
    """Tags naming the process that logs a parent run: how a later track tells it died."""
    pid = os.getpid()
    return {
        TAG_HOST: socket.gethostname(),
        TAG_PID: str(pid),
        TAG_PID_START: _start_time(pid) or "",
    }


def _process_gone(tags: dict[str, str]) -> bool | None:
    """Whether the process a run's tags name has ended; None when this cannot be told here
    (no such tags, or another host)."""
    host, pid = tags.get(TAG_HOST), tags.get(TAG_PID, "")
    if not host or not pid.isdigit() or host != socket.gethostname():
        return None
    started = _start_time(int(pid))
    if started is None:
        if Path("/proc/self/stat").is_file():
            return True
        try:  # no /proc: ask the kernel
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False
    return bool(tags.get(TAG_PID_START)) and started != tags[TAG_PID_START]


def end_dead_runs(client, experiment_id: str, key: str) -> list[str]:
    """Mark KILLED the parent runs a dead tracking process left RUNNING, and their RUNNING
    children; returns the run ids marked. A parent whose process cannot be checked (logged
    elsewhere, or before these tags) is marked only when it tracked this same pipeline state
    (``key``): the execution being logged again now."""
    running = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{TAG_ROLE}` = '{PARENT_ROLE}' and attributes.status = 'RUNNING'",
    )
    marked: list[str] = []
    for parent in running:
        tags = dict(parent.data.tags)
        gone = _process_gone(tags)
        if gone is False or (gone is None and tags.get(TAG_RUN_KEY) != key):
            continue  # alive (another track at work), or not provably dead
        children = client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{PARENT_TAG}` = '{parent.info.run_id}' "
            "and attributes.status = 'RUNNING'",
        )
        why = (
            f"its tracking process (pid {tags.get(TAG_PID, '?')} on {tags.get(TAG_HOST, '?')}) "
            "ended before the run did; marked KILLED by a later `track`"
        )
        for run in [*children, parent]:
            client.set_tag(run.info.run_id, TAG_ENDED, why)
            client.set_terminated(run.info.run_id, "KILLED")
            marked.append(run.info.run_id)
        log.warning("parent run %s and %d child run(s) were left RUNNING by a dead tracking "
                    "process: marked KILLED", parent.info.run_id, len(children))  # fmt: skip
    return marked
