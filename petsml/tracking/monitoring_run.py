"""One monitoring run of a served version, logged to MLflow: what ``pets monitor`` and the
``monitor`` flow call (:func:`monitor_served`).

The version is the one behind the registry alias now; its reference is the one logged inside
it (:func:`petsml.tracking.reference_files.load_reference`), so the window is never compared
with another version's outputs. The report (``<window>.json`` + ``.html``) is written under
``monitor.reports`` and logged as the artifacts of a run in the ``<mlflow.experiment>-monitoring``
experiment, tagged with the model name and version; the version itself gets the last verdict
as tags (``monitor.verdict``, ``monitor.run_id``, ``monitor.checked``), which the registry
page and ``mlflow ui`` show beside it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from petsml.errors import PetsError

log = logging.getLogger(__name__)

TAG_MODEL_NAME = "monitor.model_name"
TAG_MODEL_VERSION = "monitor.model_version"
TAG_VERDICT = "monitor.verdict"
TAG_RUN = "monitor.run_id"
TAG_CHECKED = "monitor.checked"
EXPERIMENT_SUFFIX = "-monitoring"


@dataclass
class MonitorRun:
    """What a monitoring run found, for a terminal, a flow's state or ``--json``."""

    model_name: str
    version: str
    alias: str
    verdict: str  # drift | ok | too few
    line: str
    files: dict[str, str]
    run_id: str
    detectors: list[dict[str, Any]] = field(default_factory=list)
    feedback: list[dict[str, Any]] = field(default_factory=list)  # accuracy per version, all time

    @property
    def drift(self) -> bool:
        return self.verdict == "drift"

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model_name, "version": self.version, "alias": self.alias,
            "verdict": self.verdict, "line": self.line, "files": self.files,
            "run_id": self.run_id, "detectors": self.detectors, "feedback": self.feedback,
        }  # fmt: skip


def _metrics(outcome) -> dict[str, float]:
    result = outcome.result
    metrics = {"n": float(result.n), "n_unique": float(result.n_unique),
               "drift": float(result.verdict == "drift")}  # fmt: skip
    for detector in result.detectors:
        if detector.p_value is not None:
            metrics[f"{detector.name}_p_value"] = float(detector.p_value)
        metrics[f"{detector.name}_drifted"] = float(detector.drifted)
    return metrics


def monitor_served(
    model_name: str,
    tracking_uri: str | None,
    alias: str,
    settings,
    experiment: str,
    *,
    last: int | None = None,
) -> MonitorRun:
    """Compare the latest window of ``alias``'s version with its reference; log and tag it."""
    from petsml.monitoring.accuracy import accuracy_over_time
    from petsml.monitoring.monitor import run_monitor
    from petsml.monitoring.record import ModelRef
    from petsml.monitoring.store import open_store
    from petsml.tracking.model_registry import ModelRegistry, global_uri
    from petsml.tracking.reference_files import load_reference
    from petsml.tracking.store import get_or_create_experiment

    registry = ModelRegistry(model_name, tracking_uri)
    holder = registry.by_alias(alias)
    if holder is None:
        raise PetsError(f"{model_name} has no '{alias}' alias in {registry.tracking_uri}: "
                        "nothing is served to monitor")  # fmt: skip
    version = str(holder.version)
    with global_uri(registry.tracking_uri):
        reference = load_reference(f"models:/{model_name}/{version}")
    with open_store(settings.store, settings) as store:
        served = ModelRef(model_name, version, alias)
        outcome = run_monitor(store, reference, settings, model=served, last=last,
                              out_dir=settings.reports)  # fmt: skip
        feedback = [f for f in store.feedback() if f.model_name == model_name]
    accuracy = [row.as_dict() for row in accuracy_over_time(feedback, "all")]
    experiment_id = get_or_create_experiment(experiment + EXPERIMENT_SUFFIX, registry.tracking_uri)
    client = registry.client
    run = client.create_run(experiment_id, run_name=f"monitor-{model_name}-v{version}", tags={
        TAG_MODEL_NAME: model_name, TAG_MODEL_VERSION: version, "alias": alias,
        TAG_VERDICT: outcome.result.verdict,
    })  # fmt: skip
    run_id = run.info.run_id
    try:
        for key, value in _metrics(outcome).items():
            client.log_metric(run_id, key, value)
        for path in (outcome.files.json, outcome.files.html):
            client.log_artifact(run_id, str(path), artifact_path="monitoring")
        client.set_terminated(run_id, "FINISHED")
    except Exception:
        client.set_terminated(run_id, "FAILED")
        raise
    registry.set_tags(
        version,
        {
            TAG_VERDICT: outcome.result.verdict,
            TAG_RUN: run_id,
            TAG_CHECKED: datetime.now(UTC).isoformat(timespec="seconds"),
        },
    )
    return MonitorRun(
        model_name, version, alias, outcome.result.verdict, outcome.line,
        {"json": str(outcome.files.json), "html": str(outcome.files.html)}, run_id,
        [d.as_dict() for d in outcome.result.detectors], accuracy,
    )  # fmt: skip
