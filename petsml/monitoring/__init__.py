"""Closing the loop: what the served model saw, whether it drifted, what users said of it.

Domain code (no MLflow, Prefect or DVC: ``pyproject.toml``'s import contracts), one module a job:

- :mod:`.record`: a prediction as kept (no photo unless ``monitor.keep_photos``);
- :mod:`.store`, :mod:`.schema`, :mod:`.rotation`: the append-only store (SQLite, or the same
  tables on PostgreSQL), bounded by rotation; :mod:`.recorder`: what a server calls per answer;
- :mod:`.reference`: the champion's validation outputs a window is compared with;
- :mod:`.mmd`, :mod:`.bbsd`, :mod:`.confidence`, :mod:`.image_drift`, :mod:`.domain_classifier`:
  the detectors; :mod:`.drift`: all of them and one verdict;
- :mod:`.report`, :mod:`.report_html`: ``<window>.json``, ``<window>.html``, a verdict line;
- :mod:`.accuracy`: accuracy on feedback over time per version; :mod:`.export`: feedback photos
  into the ``data.source: folder`` layout;
- :mod:`.monitor`: one run of all that (``pets monitor``, the ``monitor`` flow);
- :mod:`.settings`: the ``monitor:`` section of params.yaml as a typed dataclass.

docs/MONITORING.md says what is recorded, where, and how drift is decided.
"""

from petsml.monitoring.accuracy import AccuracyRow, accuracy_over_time
from petsml.monitoring.drift import DetectorResult, DriftResult, detect_drift
from petsml.monitoring.export import ExportSummary, export_feedback_photos
from petsml.monitoring.monitor import MonitorOutcome, run_monitor
from petsml.monitoring.record import (
    ImageFacts,
    ModelRef,
    PredictionRecord,
    image_facts,
    make_record,
)
from petsml.monitoring.recorder import Recorder
from petsml.monitoring.reference import Reference, build_reference, classifier_outputs
from petsml.monitoring.report import verdict_line, write_report
from petsml.monitoring.settings import MonitorSettings, MonitorSettingsError
from petsml.monitoring.store import (
    Feedback,
    MonitorStore,
    StoreError,
    UnknownPredictionError,
    open_store,
)
from petsml.monitoring.window import Sample, Window

__all__ = [
    "AccuracyRow",
    "DetectorResult",
    "DriftResult",
    "ExportSummary",
    "Feedback",
    "ImageFacts",
    "ModelRef",
    "MonitorOutcome",
    "MonitorSettings",
    "MonitorSettingsError",
    "MonitorStore",
    "PredictionRecord",
    "Recorder",
    "Reference",
    "Sample",
    "StoreError",
    "UnknownPredictionError",
    "Window",
    "accuracy_over_time",
    "build_reference",
    "classifier_outputs",
    "detect_drift",
    "export_feedback_photos",
    "image_facts",
    "make_record",
    "open_store",
    "run_monitor",
    "verdict_line",
    "write_report",
]
