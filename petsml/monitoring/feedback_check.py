"""Feedback checked before it is stored: the prediction must be on record and the label one of
the classes the answering model knows (what the web page's "wrong? it is ..." and
``pets feedback`` both call). A label outside the model's classes is a typo to fix, not a new
class: the folder export would otherwise write photos no run can train on by that name.
"""

from __future__ import annotations

import json

from petsml.errors import PetsError
from petsml.monitoring.feedback import Feedback
from petsml.monitoring.store import MonitorStore, UnknownPredictionError


class UnknownLabelError(PetsError):
    """The label is not a class of the model that made the prediction."""


def classes_of(store: MonitorStore, prediction_id: str) -> tuple[str, ...]:
    """The class names of the model that made ``prediction_id``."""
    rows = store._query(
        "SELECT c.names FROM monitor_predictions p JOIN monitor_classes c "
        "ON c.key = p.classes_key WHERE p.id = ?",
        (prediction_id,),
    )
    if not rows:
        raise UnknownPredictionError(
            f"no prediction {prediction_id!r} in the monitoring store {store.location}: it was "
            "never recorded (monitor.log off?) or rotated out (monitor.max_rows)"
        )
    return tuple(json.loads(rows[0][0]))


def record_feedback(store: MonitorStore, prediction_id: str, label: str, source: str) -> Feedback:
    """Store "``prediction_id`` shows ``label``" after checking both (see the module docstring)."""
    classes = classes_of(store, str(prediction_id).strip())
    label = str(label).strip()
    if label not in classes:
        close = [name for name in classes if label.lower() in name.lower()][:5]
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise UnknownLabelError(
            f"{label!r} is not a class of the model that answered{hint}; use one of its "
            f"{len(classes)} classes, e.g. {', '.join(classes[:3])}"
        )
    return store.add_feedback(str(prediction_id).strip(), label, source=source)
