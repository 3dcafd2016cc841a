"""Prefect flow ``pets-sweep``: backbones x strategies, one ``pets-train`` flow run per member.

Every member is an ordinary ``pets-train`` run with overrides (``model.backbone``,
``train.strategies=[<strategy>]`` and whatever ``set_params`` adds), so it works in its own
isolated workspace (a git worktree under ``.dvc/tmp/flows/``) over the project's shared DVC cache
and run cache, is saved as its own DVC experiment, and logs to the one MLflow experiment of the
project (``MLFLOW_TRACKING_URI`` points every workspace at the project's tracking store).
Members run side by side, ``max_parallel`` at a time: in this process as subflows, or, with
``deployment=<flow>/<deployment>``, as runs of that deployment picked up by a work pool's
workers (Docker, Kubernetes, ...). Every member's parameters are validated before any starts.
The sweep ends with a comparison table, best validation accuracy first (test accuracy is
reported, never used to choose), printed and kept as a Prefect table artifact.

    python -m pipelines.sweep --backbones efficientnet_lite0 resnet50 \\
        --strategies feature_extractor svm_early --max-parallel 2
"""

from __future__ import annotations

import argparse
import contextvars
import itertools
import json
import logging
import math
import sys
import tempfile
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from prefect.runtime import flow_run as current_flow_run

from petsml.config import ConfigError
from petsml.evaluation.results import COLUMN_KEYS as COMPARISON_KEYS
from petsml.evaluation.results import rows_by_strategy
from pipelines.dvc_graph import apply_overrides
from pipelines.dvc_stage import DEFAULT_STAGE_TIMEOUT_S
from pipelines.flow_cli import SET_PARAM_OPTION, add_flow_arguments
from pipelines.train import build_overrides, check_params, train_pipeline
from pipelines.user_errors import explain, failed
from pipelines.workspace import resolve_project, slug

FLOW_NAME = "pets-sweep"
DEFAULT_TARGETS = ("track",)  # members log to MLflow; registering is the weekly retrain's job
# the member's own comparison report (compare stage) adds its columns: quality, latency, size
REPORT_KEYS = tuple(
    key for key in COMPARISON_KEYS if key not in ("rank", "strategy", "val_accuracy",
                                                  "test_accuracy", "train_seconds")
)  # fmt: skip
COLUMNS = (
    "member",
    "backbone",
    "strategy",
    "state",
    "val_accuracy",
    "test_accuracy",
    "train_seconds",
    *REPORT_KEYS,
    "wall_seconds",
    "experiment",
    "mlflow_parent_run_id",
)


def _number(value: Any) -> float | int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value if isinstance(value, int) else round(float(value), 4)


def member_row(
    member: str, backbone: str, strategy: str, state: Any, result: Any, wall: float
) -> dict[str, Any]:
    """One line of the comparison table from a member's ``pets-train`` result."""
    result = result if isinstance(result, Mapping) else {}
    metrics = (result.get("metrics") or {}).get(strategy) or {}
    summary = (result.get("summaries") or {}).get(strategy) or {}
    ran = [
        row.get("seconds", 0)
        for row in result.get("stages", [])
        if row.get("stage") == f"train@{strategy}" and row.get("status") == "ran"
    ]
    train_seconds = metrics.get("train_seconds", summary.get("train_seconds"))
    if train_seconds is None and ran:
        train_seconds = sum(ran)
    experiment = result.get("experiment") or {}
    compared = rows_by_strategy(result.get("comparison")).get(strategy, {})
    return {
        "member": member,
        "backbone": backbone,
        "strategy": strategy,
        "state": getattr(state, "name", str(state)),
        "test_accuracy": _number(metrics.get("test_accuracy")),
        "val_accuracy": _number(metrics.get("val_accuracy", summary.get("val_accuracy"))),
        "train_seconds": _number(train_seconds),
        **{key: _number(compared.get(key, metrics.get(key))) for key in REPORT_KEYS},
        "wall_seconds": round(wall, 1),
        "experiment": experiment.get("name"),
        "mlflow_parent_run_id": result.get("mlflow_parent_run_id"),
        "message": None if state is None or state.is_completed() else state.message,
        "started": result.get("started"),
        "finished": result.get("finished"),
        "stages": {row.get("stage"): row.get("status") for row in result.get("stages", [])},
    }


def format_table(rows: list[dict[str, Any]]) -> str:
    """The comparison as fixed-width text, in the order given (:func:`rank_members`)."""
    cells = [[("-" if row.get(c) is None else str(row.get(c))) for c in COLUMNS] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(COLUMNS)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


def rank_members(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Best VALIDATION accuracy first (ties and members without one: by name), as ``register``
    picks its challenger. Test accuracy stays a report column: choosing by it would make the
    test set part of model selection and its number an optimistic estimate."""

    def key(row: Mapping[str, Any]) -> tuple:
        val = row.get("val_accuracy")
        scored = isinstance(val, int | float) and not math.isnan(val)
        return (not scored, -val if scored else 0.0, row["member"])

    return sorted(rows, key=key)


def check_members(
    params_file: Path,
    grid: list[tuple[str, str]],
    task: str | None,
    epochs: int | None,
    base_url: str | None,
    set_params: list[str] | None,
) -> None:
    """Validate every member's params.yaml (the project's plus its overrides) before any runs.

    Each member validates its own again in its workspace; this makes a bad override fail the
    sweep at once, naming the key, instead of failing every member after the sweep started.
    """
    with tempfile.TemporaryDirectory(prefix="pets-sweep-") as tmp:
        copy = Path(tmp) / "params.yaml"
        for backbone, strategy in grid:
            copy.write_bytes(params_file.read_bytes())
            overrides = build_overrides(
                task, backbone, [strategy], epochs, base_url, None, set_params
            )
            apply_overrides(copy, overrides)
            try:
                check_params(copy)
            except ConfigError as error:
                raise ConfigError(
                    f"sweep member {backbone} x {strategy} ({' '.join(overrides)}): "
                    f"{explain(error, copy, params_file, overrides)}"
                ) from None


def run_member(
    member: str,
    backbone: str,
    strategy: str,
    parameters: dict[str, Any],
    deployment: str | None,
    logger: logging.Logger | logging.LoggerAdapter,
    project: Path | None = None,
) -> dict[str, Any]:
    """One member: a ``pets-train`` subflow here, or a run of ``deployment`` on a work pool.

    A work-pool member's row is built from what it logged, not from its return value (which
    another machine's worker keeps unless Prefect has shared result storage): its DVC
    experiment in ``project`` and the MLflow run that experiment names
    (:func:`pipelines.run_results.logged_by_member`)."""
    started = time.time()
    result: Any = None
    if deployment:
        from prefect.deployments import run_deployment

        from pipelines.run_results import logged_by_member

        # None values stay unset; project_dir is the worker's own checkout
        parameters = {k: v for k, v in parameters.items() if v is not None and k != "project_dir"}
        flow_run = run_deployment(
            name=deployment, parameters=parameters, flow_run_name=member, timeout=None
        )
        state = flow_run.state
        try:
            result = state.result(raise_on_failure=False) if state else None
        except Exception as error:  # noqa: BLE001 - results need shared result storage
            logger.warning("member %s: result not readable here (%s)", member, error)
        result = result if isinstance(result, Mapping) else {}
        logged = logged_by_member(project, member) if project is not None else {}
        if not logged:
            logger.warning("member %s: no DVC experiment %r here (dvc exp pull?)", member, member)
        result = {**result, **{k: v for k, v in logged.items() if v is not None}}
    else:
        run = train_pipeline.with_options(flow_run_name=member)
        state = run(**parameters, return_state=True)
        result = state.result(raise_on_failure=False)
    result = result if isinstance(result, Mapping) else {}
    result = {**result, "started": started, "finished": time.time()}
    return member_row(member, backbone, strategy, state, result, time.time() - started)


def report(rows: list[dict[str, Any]], backbones: list[str], strategies: list[str]) -> None:
    """Print the comparison, keep it as a table artifact; fail naming every failed member."""
    table = format_table(rows)
    print(f"\n{FLOW_NAME} comparison\n{table}")
    create_table_artifact(
        table=[{c: row.get(c) for c in COLUMNS} for row in rows],
        key="pets-sweep-comparison",
        description=f"{len(rows)} member(s): backbones {backbones} x strategies {strategies}",
    )
    failed = [row for row in rows if row["state"] != "Completed"]
    if failed:
        names = ", ".join(f"{row['member']} ({row['message']})" for row in failed)
        raise RuntimeError(f"{len(failed)} of {len(rows)} sweep member(s) failed: {names}")


@flow(name=FLOW_NAME, log_prints=True)
def sweep(
    backbones: list[str] | None = None,
    strategies: list[str] | None = None,
    targets: list[str] | None = None,
    task: Literal["breed", "species"] | None = None,
    epochs: int | None = None,
    base_url: str | None = None,
    set_params: list[str] | None = None,
    max_parallel: int = 2,
    deployment: str | None = None,
    stage_timeout_s: float = DEFAULT_STAGE_TIMEOUT_S,
    retries: int = 3,
    retry_delay_s: float = 10.0,
    keep_workspaces: bool = False,
    project_dir: str | None = None,
) -> list[dict[str, Any]]:
    """Train every backbone x strategy as its own ``pets-train`` run; compare them.

    (Longer than most functions by its signature and this docstring: they are the one
    declaration of the flow's parameters, the command line and Prefect's schema read them.)

    Args:
        backbones: ``model.backbone`` values; default the one in params.yaml.
        strategies: strategies, one per member; default ``train.strategies`` of params.yaml.
        targets: DVC targets of every member; default ``["track"]``: everything up to the
            MLflow runs, leaving the registry's challenger/champion gate to the scheduled
            retrain (``["register"]`` includes it).
        task: ``data.task`` for every member.
        epochs: ``train.epochs`` for every member.
        base_url: ``data.base_url`` for every member.
        set_params: more ``dvc exp run -S`` overrides for every member.
        max_parallel: members running at the same time.
        deployment: ``<flow>/<deployment>`` to run members through a work pool instead of in
            this process (``pets-train/sweep-member``: no schedule, no concurrency limit).
        stage_timeout_s: per-stage timeout of the members.
        retries: retries of the members' network stages.
        retry_delay_s: first retry delay of those stages.
        keep_workspaces: keep the members' isolated workspaces.
        project_dir: the project root (default: working directory).
    """
    logger = get_run_logger()
    project = resolve_project(project_dir)
    try:  # a user error ends the sweep as a Failed state naming it, without a traceback
        params = check_params(project / "params.yaml")
        backbones = list(backbones or [params.model.backbone])
        strategies = list(strategies or params.train.strategies)
        grid = list(itertools.product(backbones, strategies))
        check_members(project / "params.yaml", grid, task, epochs, base_url, set_params)
    except ConfigError as error:
        return failed(str(error))
    prefix = slug(current_flow_run.get_name() or "sweep")
    logger.info("sweep of %d member(s), %d at a time", len(grid), max_parallel)
    common = {
        "targets": list(targets or DEFAULT_TARGETS),
        "task": task,
        "epochs": epochs,
        "base_url": base_url,
        "set_params": set_params,
        "isolate": True,
        "keep_workspace": keep_workspaces,
        "stage_timeout_s": stage_timeout_s,
        "retries": retries,
        "retry_delay_s": retry_delay_s,
        "project_dir": str(project),
    }

    def run_one(backbone: str, strategy: str) -> dict[str, Any]:
        member = slug(f"{prefix}-{backbone}-{strategy}")
        parameters = {
            **common,
            "backbone": backbone,
            "strategies": [strategy],
            "experiment_name": member,
        }
        return run_member(member, backbone, strategy, parameters, deployment, logger, project)

    with ThreadPoolExecutor(max_workers=max(1, max_parallel)) as pool:
        futures = [
            # each member's subflow must see this flow run as its parent: copy the context
            pool.submit(contextvars.copy_context().run, run_one, backbone, strategy)
            for backbone, strategy in grid
        ]
        rows = [future.result() for future in futures]
    rows = rank_members(rows)
    report(rows, backbones, strategies)
    return rows


CLI_OPTIONS = {  # what the flow's signature cannot say
    "backbones": {"metavar": "BACKBONE"},
    "strategies": {"metavar": "STRATEGY"},
    "targets": {"metavar": "STAGE"},
    "set_params": SET_PARAM_OPTION,
}


def build_parser() -> argparse.ArgumentParser:
    """Command-line options: the flow's parameters, from its signature."""
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.sweep",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_flow_arguments(parser, sweep.fn, CLI_OPTIONS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = vars(build_parser().parse_args(argv))
    state = sweep(**args, return_state=True)
    if not state.is_completed():
        print(f"\n{FLOW_NAME} {state.name}: {state.message}", file=sys.stderr)
        return 1
    print(json.dumps(state.result(), default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
