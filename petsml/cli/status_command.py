"""``pets status``: where the project stands, and the one thing to do next.

Read-only: it asks DVC which stages are stale (``dvc status``, run for real), reads the
registry's champion and challenger and the last run's record, and checks the MLflow store
against the reports (:mod:`petsml.tracking.store_check`). It never creates the store, so a
fresh clone with nothing run gets an answer that says so, and exit status 0.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from petsml import paths
from petsml.cli.common import (
    absolute_sqlite,
    add_tracking_uri,
    parser_for,
    project_options,
    project_root,
)
from petsml.cli.output import add_json_flag, emit_object, exit_codes

DVC_STATUS_TIMEOUT_S = 600
ALIASES = ("champion", "challenger")


def stale_stages(root: Path) -> tuple[list[str] | None, str | None]:
    """(stages ``dvc status`` finds changed, None) or (None, why it could not tell)."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "dvc", "status", "--json"], cwd=root, capture_output=True,
            text=True, timeout=DVC_STATUS_TIMEOUT_S,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return None, f"dvc status took over {DVC_STATUS_TIMEOUT_S} s"
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        return None, f"dvc status failed: {last}"
    try:
        changed = json.loads(done.stdout or "{}")
    except json.JSONDecodeError:
        return None, f"dvc status printed no JSON: {done.stdout[:200]!r}"
    return sorted(changed), None


def _version_row(version) -> dict[str, Any]:
    from petsml.tracking.model_registry import float_or_none

    tags = version.tags
    return {"version": str(version.version), "strategy": tags.get("strategy"),
            "val_accuracy": float_or_none(tags.get("val_accuracy")),
            "test_accuracy": float_or_none(tags.get("test_accuracy"))}  # fmt: skip


def _models(name: str, uri: str) -> dict[str, Any]:
    from petsml.tracking.model_registry import ModelRegistry

    registry = ModelRegistry(name, uri)
    if not registry.exists():
        return {alias: None for alias in ALIASES}
    return {alias: (None if (v := registry.by_alias(alias)) is None else _version_row(v))
            for alias in ALIASES}  # fmt: skip


def _last_run(uri: str, store_exists: bool) -> dict[str, Any] | None:
    from petsml.io import read_json

    if not paths.MLFLOW_RUNS.is_file():
        return None
    record = read_json(paths.MLFLOW_RUNS)
    run = {"parent_run_id": record.get("parent_run_id"),
           "strategies": sorted(record.get("children") or {}), "start_time": None,
           "ui_path": record.get("ui_path")}  # fmt: skip
    if store_exists and run["parent_run_id"]:
        from mlflow import MlflowClient

        try:
            info = MlflowClient(uri).get_run(run["parent_run_id"]).info
            run["start_time"] = _iso(info.start_time)
        except Exception as error:  # the store lost it: the health check names it
            run["start_time"] = f"unreadable ({type(error).__name__})"
    return run


def _iso(millis: int | None) -> str | None:
    from datetime import UTC, datetime

    return None if millis is None else datetime.fromtimestamp(millis / 1000, UTC).isoformat()


def _store(uri: str, experiment: str) -> dict[str, Any]:
    from petsml.tracking.store import sqlite_path
    from petsml.tracking.store_check import inspect_store, read_claims

    db = sqlite_path(uri)
    if db is not None and not db.is_file():
        return {"uri": uri, "exists": False, "missing": []}
    _, missing = inspect_store(uri, experiment, read_claims("."))
    return {"uri": uri, "exists": True, "missing": missing}


def next_step(status: dict[str, Any]) -> str:
    """The one thing to do next, from what the status found."""
    store, stale, models = status["store"], status["stale_stages"], status["models"]
    if not store["exists"]:
        return "nothing run yet: `pets run` runs the whole pipeline (dvc repro)"
    if store["missing"]:
        return "the MLflow store lacks what the reports name: `pets run` logs and registers again"
    if stale:
        return f"{len(stale)} stage(s) out of date: `pets run` brings them up to date"
    if models["champion"] is None:
        return "no champion registered: `pets run` (its register stage) or `pets promote`"
    challenger, champion = models["challenger"], models["champion"]
    if challenger is not None and challenger["version"] != champion["version"]:
        return "a challenger waits: `pets report` to compare, `pets promote challenger` to ship it"
    return "up to date: `pets web` to try the champion, `pets serve` to serve it"


def collect(args: argparse.Namespace) -> dict[str, Any]:
    from petsml.config import load_params
    from petsml.tracking import store

    root = project_root(args)
    params = load_params(Path(args.params))
    given = absolute_sqlite(args.tracking_uri)
    os.chdir(root)  # the reports and the default store are relative to the project
    uri = given or store.tracking_uri()
    health = _store(uri, params.mlflow.experiment)
    name = params.registered_model_name
    models = _models(name, uri) if health["exists"] else {alias: None for alias in ALIASES}
    stale, dvc_problem = stale_stages(root)
    status = {"project": str(root), "model": name, "models": models,
              "last_run": _last_run(uri, health["exists"]), "stale_stages": stale,
              "dvc_problem": dvc_problem, "store": health}  # fmt: skip
    status["next"] = next_step(status)
    return status


def render(status: dict[str, Any]) -> str:
    lines = [f"project  {status['project']}", f"model    {status['model']}"]
    for alias, row in status["models"].items():
        if row is None:
            lines.append(f"  @{alias:<10} none")
            continue
        scores = "  ".join(f"{k} {row[k]:.3f}" for k in ("val_accuracy", "test_accuracy")
                           if row[k] is not None)  # fmt: skip
        lines.append(f"  @{alias:<10} v{row['version']}  {row['strategy'] or '?'}  {scores}")
    run = status["last_run"]
    lines.append("last run " + (f"none (no {paths.MLFLOW_RUNS})" if run is None else
                 f"{run['parent_run_id']} at {run['start_time'] or '?'}: "
                 f"{', '.join(run['strategies'])}"))  # fmt: skip
    stale = status["stale_stages"]
    if stale is None:
        lines.append(f"stages   unknown: {status['dvc_problem']}")
    else:
        lines.append(f"stages   {len(stale)} stale" + (f": {', '.join(stale)}" if stale else ""))
    store = status["store"]
    health = ("not created yet" if not store["exists"] else "healthy" if not store["missing"]
              else "lacks " + ", ".join(store["missing"][:4]))  # fmt: skip
    lines.append(f"store    {store['uri']}: {health}")
    lines.append(f"next     {status['next']}")
    return "\n".join(lines)


def cmd_status(args: argparse.Namespace) -> None:
    status = collect(args)
    emit_object(status, args.json, render)


def register(sub, common: argparse.ArgumentParser) -> None:
    p = parser_for(
        sub, "status", parents=[project_options()],
        help="where the project stands: models, last run, stale stages, store, next step",
        description="The champion and challenger (version, strategy, scores), the last run, "
        "the stages `dvc status` finds out of date, the MLflow store's health and the one "
        "thing to do next. Reads only; in a fresh clone it says nothing has run.",
        epilog=exit_codes("the params file cannot be read"),
    )  # fmt: skip
    add_tracking_uri(p)
    add_json_flag(p, "one object: project, model, models, last_run, stale_stages, store, next")
    p.set_defaults(func=cmd_status)
