"""The web page's feedback: its answers are recorded, and "wrong? it is ..." is stored.

``install_feedback_routes`` turns recording on for the page's model (params.yaml's ``monitor:``
section, ``source`` web: every answer carries a ``prediction_id``) and adds:

- ``GET /api/classes``: the answering model's class names (the page's "it is ..." choices);
- ``POST /api/feedback`` ``{"prediction_id": ..., "label": ...}``: 200 with what was stored;
  400 for a missing field or a label the model does not know, 404 for an id the store does not
  hold (never recorded, or rotated out), 503 when recording is off (nothing to answer to).
"""

# no `from __future__ import annotations`: FastAPI reads the route's `Request` annotation

import threading
from pathlib import Path
from typing import Any

from petsml.errors import PetsError

FEEDBACK_SOURCE = "web"


class _Feedback:
    """The store the page's answers go to, opened on first use."""

    def __init__(self, params_path: str | Path) -> None:
        self.params_path = Path(params_path)
        self._store = None
        self._lock = threading.Lock()

    def settings(self):
        from petsml.tracking.monitor_config import project_settings

        if not self.params_path.is_file():
            raise PetsError(f"{self.params_path}: no params file, so no monitor: settings")
        return project_settings(self.params_path)

    def store(self):
        from petsml.monitoring.store import open_store

        with self._lock:
            if self._store is None:
                settings = self.settings()
                if not settings.log:
                    raise PetsError("recording is off (params.yaml monitor.log: false): there "
                                    "is no answer to give feedback on")  # fmt: skip
                self._store = open_store(settings.store, settings)
            return self._store


def install_feedback_routes(app: Any, holder: Any, params_path: str | Path) -> None:
    """Record the page's answers and add the routes above to ``app``."""
    from fastapi import Request
    from fastapi.responses import JSONResponse

    from petsml.tracking.monitor_config import loader_config

    holder.record = loader_config(True, FEEDBACK_SOURCE, params_path)
    feedback = _Feedback(params_path)

    def problem(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    @app.get("/api/classes")
    def classes() -> JSONResponse:
        try:
            model = holder.current().model.unwrap_python_model()
        except PetsError as error:
            return problem(503, str(error))
        return JSONResponse({"classes": list(model.class_names)})

    @app.post("/api/feedback")
    async def give_feedback(request: Request) -> JSONResponse:
        from petsml.monitoring.feedback_check import UnknownLabelError, record_feedback
        from petsml.monitoring.store import UnknownPredictionError

        try:
            body = await request.json()
        except ValueError:
            return problem(400, 'send JSON: {"prediction_id": "...", "label": "<class>"}')
        if not isinstance(body, dict):
            return problem(400, 'send a JSON object: {"prediction_id": "...", "label": "..."}')
        missing = [key for key in ("prediction_id", "label") if not str(body.get(key) or "")]
        if missing:
            example = '{"prediction_id": "<from the answer>", "label": "<class>"}'
            return problem(400, f"feedback needs {' and '.join(missing)}: {example}")
        try:
            stored = record_feedback(feedback.store(), str(body["prediction_id"]),
                                     str(body["label"]), source=FEEDBACK_SOURCE)  # fmt: skip
        except UnknownPredictionError as error:
            return problem(404, str(error))
        except UnknownLabelError as error:
            return problem(400, str(error))
        except PetsError as error:
            return problem(503, str(error))
        return JSONResponse({"prediction_id": stored.prediction_id, "label": stored.label,
                             "predicted": stored.predicted, "correct": stored.correct,
                             "model_version": stored.model_version})  # fmt: skip
