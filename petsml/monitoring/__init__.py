"""Closing the loop: what the served model saw, whether it drifted, what users said of it.

Domain code (no MLflow, Prefect or DVC: ``pyproject.toml``'s import contracts), one module a job:

- :mod:`.record`: a prediction as kept (no photo unless ``monitor.keep_photos``);
- :mod:`.store`, :mod:`.schema`, :mod:`.rotation`: the append-only store (SQLite, or the same
  tables on PostgreSQL), bounded by rotation; :mod:`.recorder`: what a server calls per answer;
- :mod:`.reference`: the champion's validation outputs a window is compared with;
- :mod:`.mmd`, :mod:`.bbsd`, :mod:`.confidence`, :mod:`.image_drift`, :mod:`.domain_classifier`:
  the detectors; :mod:`.drift`: all of them and one verdict;
- :mod:`.report`, :mod:`.report_html`: ``<window>.json``, ``<window>.html``, a verdict line;
- :mod:`.feedback`, :mod:`.feedback_check`, :mod:`.accuracy`: "it is X" answers (checked),
  and accuracy on them over time per version; :mod:`.export`: feedback photos into the
  ``data.source: folder`` layout;
- :mod:`.monitor`: one run of all that (``pets monitor``, the ``monitor`` flow);
- :mod:`.settings`: the ``monitor:`` section of params.yaml as a typed dataclass.

docs/MONITORING.md says what is recorded, where, and how drift is decided.

The names below load on first use (PEP 562): a serving process that imports only the recorder
(:mod:`.record`, :mod:`.store`) never loads scipy, scikit-learn or matplotlib, which only the
detectors and the report need.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "accuracy": ("AccuracyRow", "accuracy_over_time"),
    "drift": ("DetectorResult", "DriftResult", "detect_drift"),
    "export": ("ExportSummary", "export_feedback_photos"),
    "feedback": ("Feedback", "FeedbackPhoto"),
    "feedback_check": ("UnknownLabelError", "record_feedback"),
    "monitor": ("MonitorOutcome", "run_monitor"),
    "record": ("ImageFacts", "ModelRef", "PredictionRecord", "image_facts", "make_record"),
    "recorder": ("Recorder",),
    "reference": ("Reference", "build_reference", "classifier_outputs"),
    "report": ("verdict_line", "write_report"),
    "settings": ("MonitorSettings", "MonitorSettingsError"),
    "store": ("MonitorStore", "StoreError", "UnknownPredictionError", "open_store"),
    "window": ("Sample", "Window"),
}
_MODULE_OF = {name: module for module, names in _WHERE.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
