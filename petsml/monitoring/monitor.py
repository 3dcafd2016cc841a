"""One monitoring run: the window, its drift, accuracy on feedback, the report. What ``pets
monitor`` and the ``monitor`` flow call (:func:`run_monitor`).

The window is the last ``monitor.window`` predictions of the reference's own model version (the
reference knows which version it describes; a store with several versions is compared only
where it should be). Logging the report to MLflow, failing a flow run and starting a retraining
are the callers' business: this module returns what they need (:class:`MonitorOutcome`) and
imports none of them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from petsml.monitoring.accuracy import AccuracyRow, Period, accuracy_over_time
from petsml.monitoring.drift import DriftResult, detect_drift
from petsml.monitoring.record import ModelRef
from petsml.monitoring.reference import Reference
from petsml.monitoring.report import ReportFiles, verdict_line, window_name, write_report
from petsml.monitoring.settings import MonitorSettings
from petsml.monitoring.store import MonitorStore
from petsml.monitoring.window import Window

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MonitorOutcome:
    result: DriftResult
    window: Window
    accuracy: list[AccuracyRow]
    files: ReportFiles
    line: str  # the verdict line

    @property
    def drift(self) -> bool:
        """Whether an alerting detector fired: the flow's cue to fail or retrain."""
        return self.result.verdict == "drift"


def run_monitor(
    store: MonitorStore,
    reference: Reference,
    settings: MonitorSettings | None = None,
    *,
    model: ModelRef | None = None,
    last: int | None = None,
    since: float | None = None,
    until: float | None = None,
    out_dir: str | Path | None = None,
    name: str | None = None,
    period: Period = "week",
) -> MonitorOutcome:
    """Compare the window of ``model`` (default: the reference's model, else the most recently
    recorded one) with ``reference``; write ``<out_dir>/<name>.json|.html`` (``out_dir``
    defaults to ``monitor.reports``)."""
    settings = settings or store.settings
    if model is None and reference.model.name:
        model = reference.model
    window = store.window(model, last=last or settings.window, since=since, until=until)
    result = detect_drift(reference, window, settings)
    feedback = store.feedback()
    accuracy = accuracy_over_time(feedback, period)
    files = write_report(
        out_dir or settings.reports, result, window, reference, settings, accuracy,
        name or window_name(window),
    )  # fmt: skip
    line = verdict_line(result, window)
    log.info("%s (%d feedback answers in the store)", line, len(feedback))
    return MonitorOutcome(result, window, accuracy, files, line)
