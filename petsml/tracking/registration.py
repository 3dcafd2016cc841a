"""The register stage's recipe: this execution's best model becomes a version and faces the gate.

:func:`register_execution` reads what the track stage recorded (``reports/mlflow_runs.json``),
picks the strategy with the best VALIDATION accuracy, registers its model (alias
``challenger``), judges it for ``champion`` (:func:`petsml.tracking.promotion.gate_and_promote`),
records the verdict and the model card on the version, and returns the new
``reports/registry.json``. Each step is one small function below, in the order it runs.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from petsml import paths
from petsml.tracking.errors import RegistryError
from petsml.tracking.gate import pick_best
from petsml.tracking.model_card import TABLE_METRICS, build_model_card, gather_card_inputs
from petsml.tracking.model_registry import (
    CHALLENGER,
    COMPLETE,
    REGISTRATION_TAG,
    STARTED,
    ModelRegistry,
    float_or_none,
)
from petsml.tracking.promotion import Verdict, gate_and_promote, lost_champion

log = logging.getLogger(__name__)

# The scores a registered version carries as tags: the model's quality, the columns of its
# card's table. Not ``petsml.evaluation.evaluate.METRIC_KEYS``, the keys of a metrics.json entry,
# which also hold ``train_seconds`` (what training cost, not how good the model is); importing
# that module would also tie this stage to torch and the evaluation code.
VERSION_SCORE_KEYS = tuple(key for key, _ in TABLE_METRICS)


@dataclass(frozen=True)
class Candidate:
    """This execution's best-by-validation strategy: what registering and judging it needs."""

    strategy: str
    run_id: str
    run_tags: dict[str, str]  # the strategy's child run's tags
    model_uri: str
    metrics: dict[str, dict[str, float]]  # every strategy's run metrics (the card's table)


def _metrics(client, run_id: str) -> dict[str, float]:
    return dict(client.get_run(run_id).data.metrics)


def _check_runs(runs: Mapping[str, Any]) -> None:
    for key in ("children", "model_uris"):
        if not runs.get(key):
            raise RegistryError(f"{paths.MLFLOW_RUNS} has no {key!r}; re-run `dvc repro track`.")


def pick_candidate(client, runs: Mapping[str, Any], task: str | None) -> Candidate:
    """The strategy with the best validation accuracy, its run and its logged model."""
    children: dict[str, str] = dict(runs["children"])
    metrics = {strategy: _metrics(client, run_id) for strategy, run_id in children.items()}
    best = pick_best({s: m.get("val_accuracy") for s, m in metrics.items()})
    run_id = children[best]
    run_tags = client.get_run(run_id).data.tags
    if task and run_tags.get("task") and run_tags["task"] != task:
        raise RegistryError(
            f"{paths.MLFLOW_RUNS} holds runs of task {run_tags['task']!r} but params.yaml "
            f"data.task is {task!r}; re-run `dvc repro track` (or fix data.task)."
        )
    model_uri = runs["model_uris"].get(best)
    if not model_uri:
        raise RegistryError(
            f"{paths.MLFLOW_RUNS} has no model_uris[{best!r}]; re-run `dvc repro track`."
        )
    return Candidate(best, run_id, run_tags, model_uri, metrics)


def _version_tags(runs: Mapping[str, Any], candidate: Candidate) -> dict[str, Any]:
    """Where the version comes from (commit, data, runs) and how good it is."""
    scores = candidate.metrics[candidate.strategy]
    tags = candidate.run_tags
    return {
        "strategy": candidate.strategy,
        "backbone": tags.get("backbone"),
        "task": tags.get("task"),
        "git_commit": tags.get("git_commit"),
        "dvc_data_hash": tags.get("dvc_data_hash"),
        "parent_run_id": runs.get("parent_run_id"),
        "run_key": runs.get("run_key"),
        "model_uri": candidate.model_uri,
        REGISTRATION_TAG: STARTED,  # "complete" once aliases, verdict and card are set
        **{k: scores.get(k) for k in VERSION_SCORE_KEYS},
    }


def _version(registry: ModelRegistry, runs: Mapping[str, Any], candidate: Candidate, existing):
    """The candidate's version: ``existing`` (registered by an interrupted earlier run, whose
    gate is finished now rather than registering a duplicate) or a new one."""
    if existing is not None:
        log.info("run %s is %s version %s without a gate decision", candidate.run_id,
                 registry.name, existing.version)  # fmt: skip
        return existing
    return registry.register(candidate.model_uri, candidate.run_id, _version_tags(runs, candidate))


def _record_verdict(registry: ModelRegistry, number: str, verdict: Verdict) -> None:
    """The gate's verdict as tags on the version (read back by a later re-run)."""
    decision = verdict.decision
    gate_tags = {
        "gate.decision": verdict.label,
        "gate.reason": decision.reason,
        "gate.p_value": decision.p_value,
        "gate.champion_version": verdict.against,
        "gate.lost_champion": None if verdict.lost is None else json.dumps(verdict.lost),
    }
    if decision.comparison is not None:
        gate_tags["gate.comparison"] = json.dumps(decision.comparison.as_dict(), sort_keys=True)
    registry.set_tags(number, gate_tags)


def _attach_card(
    registry: ModelRegistry,
    runs: Mapping[str, Any],
    candidate: Candidate,
    number: str,
    project_root: str | Path,
) -> None:
    """The model card: an artifact of the candidate's run and the version's description."""
    client = registry.client
    card = build_model_card(
        gather_card_inputs(
            client, runs, candidate.metrics, candidate.strategy, registry.name, number,
            project_root=project_root,
        )
    )  # fmt: skip
    client.log_text(candidate.run_id, card, "model_card.md")
    registry.describe(number, card)
    registry.set_tags(number, {"model_card": f"runs:/{candidate.run_id}/model_card.md"})


def _report(registry, number, strategy, label, decision_reason, p_value, run_id, comparison,
            lost=None) -> dict[str, Any]:  # fmt: skip
    """The ``reports/registry.json`` content; it remembers the champion (or a lost one)."""
    record = registry.champion_record()
    report = {
        "model_name": registry.name,
        "version": number,
        "strategy": strategy,
        "aliases": registry.aliases_of(number),
        "decision": label,
        "p_value": p_value,
        "reason": decision_reason,
        "champion": None if record is None else record["version"],
        "run_id": run_id,
        "comparison": comparison,
        "champion_record": record,
    }
    if record is None and lost is not None:
        report["lost_champion"] = lost  # remembered until a champion is crowned
    return report


def _already_registered(registry: ModelRegistry, existing, candidate: Candidate, previous):
    """The report of a re-run for a run that is already a version with a gate decision."""
    run_id = candidate.run_id
    log.info("run %s is already %s version %s", run_id, registry.name, existing.version)
    reason = (
        f"run {run_id} is already version {existing.version}; not registered again "
        f"(its gate decision: {existing.tags['gate.decision']}: "
        f"{existing.tags.get('gate.reason', '')})"
    )
    return _report(
        registry, str(existing.version), existing.tags.get("strategy", candidate.strategy),
        "already_registered", reason, float_or_none(existing.tags.get("gate.p_value")), run_id,
        json.loads(existing.tags.get("gate.comparison", "null")),
        lost_champion(registry, previous),
    )  # fmt: skip


def register_execution(
    runs: Mapping[str, Any],
    model_name: str,
    max_p_value: float,
    tracking_uri: str | None = None,
    task: str | None = None,
    project_root: str | Path = ".",
    previous: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Register this execution's best strategy and run the promotion gate.

    ``runs`` is ``reports/mlflow_runs.json``; its ``tracking_uri`` (where the runs live) is
    used unless ``tracking_uri`` is given. ``task``, when given, must match the runs' ``task``
    tag. ``previous`` is the last ``reports/registry.json``: if it names a champion this store
    no longer holds, that champion is not forgotten (:func:`lost_champion`). Returns the new
    ``reports/registry.json`` content. Re-running for a run that is already a version changes
    nothing and reports that version.
    """
    _check_runs(runs)
    registry = ModelRegistry(model_name, tracking_uri or runs.get("tracking_uri"))
    candidate = pick_candidate(registry.client, runs, task)
    existing = registry.find_by_run(candidate.run_id)
    if existing is not None and existing.tags.get("gate.decision"):
        if existing.tags.get(REGISTRATION_TAG) == STARTED:  # killed after its verdict
            _attach_card(registry, runs, candidate, str(existing.version), project_root)
            registry.set_tags(existing.version, {REGISTRATION_TAG: COMPLETE})
        return _already_registered(registry, existing, candidate, previous)

    version = _version(registry, runs, candidate, existing)
    number = str(version.version)
    why = f"registered from run {candidate.run_id} ({candidate.strategy})"
    registry.move_alias(CHALLENGER, number, "register", why)
    key = (runs.get("run_key"), candidate.strategy)
    verdict = gate_and_promote(registry, version, key, max_p_value, previous)
    _record_verdict(registry, number, verdict)
    _attach_card(registry, runs, candidate, number, project_root)
    registry.set_tags(number, {REGISTRATION_TAG: COMPLETE})  # the last step: nothing left

    decision = verdict.decision
    comparison = None if decision.comparison is None else decision.comparison.as_dict()
    return _report(registry, number, candidate.strategy, verdict.label, decision.reason,
                   decision.p_value, candidate.run_id, comparison, verdict.lost)  # fmt: skip
