"""Prefect flow ``pets-train``: the DVC pipeline as one Prefect task per DVC stage.

The stage list and its order come from DVC (``pipelines.dvc_graph.stage_order``), so a stage
added to ``dvc.yaml`` or a strategy added to ``train.strategies`` shows up here unchanged. Each
task runs ``dvc repro --single-item <stage>``: DVC still decides what is up to date (unchanged
stages print "didn't change, skipping") and every artefact stays DVC-tracked.

Parameter overrides never touch the project's ``params.yaml``. A run with overrides (or with
``isolate=True``) works in an isolated workspace: a git worktree of ``HEAD`` under
``.dvc/tmp/flows/`` carrying the uncommitted changes of the project, sharing its DVC cache (and
run cache, so stages already computed anywhere are restored, not recomputed). The overrides go
into that copy's ``params.yaml`` through the same code ``dvc exp run -S`` uses, the stages run
there one task each, and the result is saved as a DVC experiment (``dvc exp save``) of the
project: ``dvc exp show`` lists it with its params and metrics, ``dvc exp apply <name>`` brings
it into the workspace. Without overrides the stages run in the project itself and the finished
state is recorded the same way. Only what ran is recorded: each stage's code, params and
command are fingerprinted when it starts, and when any changed before the run ends (an edit
made while a long stage ran) the flow fails naming them instead of saving the experiment.

This module is the flow and its command line (generated from the flow's signature by
``pipelines.flow_cli``); the stage task is ``pipelines.dvc_stage``, workspaces and locks
``pipelines.workspace``, ``dvc exp save`` and the recorded-inputs check ``pipelines.exp_record``,
what a run produced ``pipelines.run_results``, subprocesses ``pipelines.shell``.

    python -m pipelines.train                       # whole pipeline, params.yaml as committed
    python -m pipelines.train --targets split       # data stages only
    python -m pipelines.train --backbone resnet50 --epochs 3 -S train.patience=2
    python -m pipelines.train --serve               # weekly schedule without a work pool
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run as current_flow_run

from petsml.config import ConfigError
from pipelines.dvc_graph import Snapshot, apply_overrides, source_snapshot, stage_order
from pipelines.dvc_stage import (
    DEFAULT_RETRY_STAGES,
    DEFAULT_STAGE_TIMEOUT_S,
    repro_stage,
    stage_options,
)
from pipelines.exp_record import files_to_record, refuse_if_inputs_changed, save_experiment
from pipelines.flow_cli import SET_PARAM_OPTION, add_flow_arguments
from pipelines.run_results import collect_results
from pipelines.user_errors import explain, failed
from pipelines.workspace import open_workspace, project_lock, resolve_project, slug

FLOW_NAME = "pets-train"
DEPLOYMENT_NAME = "weekly-retrain"
WEEKLY_CRON = "0 3 * * 1"  # Mondays 03:00: retrain -> register challenger -> gate decides


def build_overrides(
    task: str | None = None,
    backbone: str | None = None,
    strategies: list[str] | None = None,
    epochs: int | None = None,
    base_url: str | None = None,
    seed: int | None = None,
    set_params: list[str] | None = None,
) -> list[str]:
    """Flow parameters as ``dvc exp run -S`` overrides (named ones first, then ``set_params``)."""
    from pipelines.dvc_graph import hydra_value

    named = {
        "data.task": task,
        "model.backbone": backbone,
        "train.strategies": strategies,
        "train.epochs": epochs,
        "data.base_url": base_url,
        "train.seed": seed,
    }
    out = [f"{key}={hydra_value(value)}" for key, value in named.items() if value is not None]
    return out + [item for item in (set_params or []) if item.strip()]


def check_params(params_file: Path) -> Any:
    """Validate the whole ``params.yaml`` a run will use, before it spends time on any stage.

    Raises :class:`petsml.config.ConfigError` naming the bad key (and the nearest valid one) or
    an unknown ``model.backbone``: the same check as the DVC ``params`` stage, so a flow fails
    before the first stage task instead of inside it.
    """
    from petsml.params_check import check_params_file

    return check_params_file(params_file)


def tracking_env(project: Path, isolated: bool) -> dict[str, str]:
    """Every workspace logs to the project's MLflow store, not to a copy that goes away."""
    if not isolated or os.environ.get("MLFLOW_TRACKING_URI"):
        return {}
    from petsml.tracking.store import default_tracking_uri

    return {"MLFLOW_TRACKING_URI": default_tracking_uri(project)}


def repro_stages(
    workspace: Path,
    order: list[str],
    force: bool,
    options_for: Callable[[str], dict[str, Any]],
    extra_env: dict[str, str],
) -> list[dict[str, Any]]:
    """One task per stage, in order; each stage's inputs are fingerprinted as it starts and
    checked again at the end (:func:`refuse_if_inputs_changed`)."""
    stages = []
    started: Snapshot = {}
    for stage in order:
        started.update(source_snapshot(workspace, [stage]))
        stages.append(repro_stage(stage, str(workspace), force, options_for(stage), extra_env))
    refuse_if_inputs_changed(workspace, started)
    return stages


def _markdown(result: Mapping[str, Any]) -> str:
    exp = result.get("experiment") or {}
    lines = [
        f"## {FLOW_NAME}: {len(result['stages'])} DVC stage(s)",
        "",
        f"- workspace: `{result['workspace']}`{' (isolated)' if result['isolated'] else ''}",
        f"- overrides: `{' '.join(result['overrides']) or 'none'}`",
        f"- DVC experiment: `{exp.get('name', '-')}` rev `{exp.get('rev', '-')}` "
        f"(baseline `{exp.get('baseline', '-')}`)",
        f"- MLflow parent run: `{result.get('mlflow_parent_run_id') or '-'}`",
        "",
        "| stage | status | seconds | attempts |",
        "| --- | --- | ---: | ---: |",
    ]
    for row in result["stages"]:
        lines.append(f"| {row['stage']} | {row['status']} | {row['seconds']} | {row['attempts']} |")
    for strategy, summary in (result.get("summaries") or {}).items():
        if isinstance(summary, Mapping):
            lines.append(
                f"\n`{strategy}`: val accuracy {summary.get('val_accuracy')}, "
                f"train {summary.get('train_seconds')} s"
            )
    return "\n".join(lines)


@flow(name=FLOW_NAME, persist_result=True, log_prints=True)
def train_pipeline(
    targets: list[str] | None = None,
    task: Literal["breed", "species"] | None = None,
    backbone: str | None = None,
    strategies: list[str] | None = None,
    epochs: int | None = None,
    base_url: str | None = None,
    seed: int | None = None,
    set_params: list[str] | None = None,
    experiment_name: str | None = None,
    isolate: bool = False,
    keep_workspace: bool = False,
    save_exp: bool = True,
    force: bool = False,
    stage_timeout_s: float = DEFAULT_STAGE_TIMEOUT_S,
    retry_stages: list[str] | None = None,
    retries: int = 3,
    retry_delay_s: float = 10.0,
    project_dir: str | None = None,
) -> dict[str, Any]:
    """Run the DVC pipeline stage by stage; with overrides, as an isolated DVC experiment.

    (Longer than most functions by its signature and this docstring: they are the one
    declaration of the flow's parameters, the command line and Prefect's schema read them.)

    Args:
        targets: DVC targets to bring up to date with everything upstream (``split``,
            ``train``, ``train@svm_early``); default the whole pipeline.
        task: overrides ``data.task`` (breed | species).
        backbone: overrides ``model.backbone``.
        strategies: overrides ``train.strategies``.
        epochs: overrides ``train.epochs``.
        base_url: overrides ``data.base_url`` (mirror URL or folder of the two archives).
        seed: overrides ``train.seed``.
        set_params: more overrides in ``dvc exp run -S`` syntax, e.g. ``["split.seed=3"]``.
        experiment_name: DVC experiment name; default ``<flow run name>-<id>``.
        isolate: run in an isolated workspace even without overrides.
        keep_workspace: keep the isolated workspace (under ``.dvc/tmp/flows/``) afterwards.
        save_exp: record the finished state as a DVC experiment (``dvc exp save``).
        force: re-run stages even when DVC finds them unchanged (``dvc repro --force``).
        stage_timeout_s: timeout of every stage task, in seconds.
        retry_stages: stages retried on failure (default ``["download"]``).
        retries: how many times those stages are retried.
        retry_delay_s: first retry delay; it doubles on each further retry.
        project_dir: the project root; default the working directory (or this repository).
    """
    logger = get_run_logger()
    project = resolve_project(project_dir)
    overrides = build_overrides(task, backbone, strategies, epochs, base_url, seed, set_params)
    isolated = isolate or bool(overrides)
    run_name = current_flow_run.get_name() or "run"
    run_id = str(current_flow_run.get_id() or uuid.uuid4().hex)
    name = slug(experiment_name or f"{run_name}-{run_id.replace('-', '')[:6]}")
    extra_env = tracking_env(project, isolated)
    retried = set(DEFAULT_RETRY_STAGES if retry_stages is None else retry_stages)

    def options_for(stage: str) -> dict[str, Any]:
        return stage_options(stage, stage_timeout_s, retried, retries, retry_delay_s)

    with open_workspace(project, name, isolated, keep_workspace) as workspace:
        if isolated:
            logger.info("isolated workspace %s", workspace)
        if overrides:
            apply_overrides(workspace / "params.yaml", overrides)
            logger.info("overrides (dvc exp run -S): %s", " ".join(overrides))
        try:  # before any stage: fails naming the bad key, as the user typed it
            check_params(workspace / "params.yaml")
        except ConfigError as error:
            message = explain(error, workspace / "params.yaml", project / "params.yaml", overrides)
            return failed(message)  # a user error: a Failed state, no traceback
        with contextlib.nullcontext() if isolated else project_lock(project):
            order = stage_order(workspace, targets)
            logger.info("DVC stages in order: %s", " -> ".join(order))
            stages = repro_stages(workspace, order, force, options_for, extra_env)
            experiment = None
            if save_exp:
                message = f"{FLOW_NAME} flow run {run_name} ({run_id})"
                if overrides:
                    message += ": " + " ".join(overrides)
                include = files_to_record(workspace, isolated)
                experiment = save_experiment(
                    str(project), str(workspace), name, order, message, include
                )
            result: dict[str, Any] = {
                "flow_run": {"id": run_id, "name": run_name},
                "project": str(project),
                "workspace": str(workspace),
                "isolated": isolated,
                "targets": list(targets or []),
                "overrides": overrides,
                "stages": stages,
                "experiment": experiment,
                **collect_results(workspace),
            }
    create_markdown_artifact(
        _markdown(result), key="pets-train-run", description="DVC stages, experiment, MLflow run"
    )
    return result


# --------------------------------------------------------------------------- command line

SERVE_ONLY = {"serve", "name", "cron"}
CLI_OPTIONS = {  # what the flow's signature cannot say
    "targets": {"metavar": "STAGE"},
    "strategies": {"metavar": "STRATEGY"},
    "set_params": SET_PARAM_OPTION,
    "retry_stages": {"nargs": "*", "metavar": "STAGE"},  # given empty: retry no stage
}


def build_parser() -> argparse.ArgumentParser:
    """Command-line options: the flow's parameters (from its signature), then serving."""
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.train",
        description="Run the DVC pipeline as the Prefect flow 'pets-train' (ephemeral Prefect "
        "unless PREFECT_API_URL points at a server), or --serve it on a weekly schedule.",
    )
    add_flow_arguments(parser, train_pipeline.fn, CLI_OPTIONS)
    serve = parser.add_argument_group("serving (no work pool needed)")
    serve.add_argument("--serve", action="store_true", help="serve the flow on a schedule")
    serve.add_argument("--name", default=DEPLOYMENT_NAME, help="deployment name")
    serve.add_argument("--cron", default=WEEKLY_CRON, help="schedule (cron, UTC)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = vars(build_parser().parse_args(argv))
    serve = {key: args.pop(key) for key in SERVE_ONLY}
    if serve["serve"]:
        parameters = {key: value for key, value in args.items() if value is not None}
        train_pipeline.serve(name=serve["name"], cron=serve["cron"], parameters=parameters)
        return 0
    state = train_pipeline(**args, return_state=True)
    if not state.is_completed():
        print(f"\n{FLOW_NAME} {state.name}: {state.message}", file=sys.stderr)
        return 1
    result = state.result()
    print(json.dumps({k: result[k] for k in ("stages", "experiment", "mlflow_parent_run_id")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
