"""The served model's recording hook: each answered photo goes to the monitoring store.

The pyfunc's ``model_config`` carries params.yaml's ``monitor:`` section (logged by the track
stage, as the serve limits are), so ``mlflow models serve`` records without the project around
it. A loader overrides it: ``model_config={"monitor_overrides": {"store": "/srv/p.sqlite"}}``
changes some keys (``monitor_overrides`` is merged onto the logged section), and
``MLFLOW_PYFUNC_INFERENCE_CONFIG='{"monitor_overrides": {"log": false}}'`` does the same for
``mlflow models serve``. A relative ``store`` is the serving process's working folder's.

Which model answered: the loader says it (``model_name``, ``model_version``, ``model_alias``:
:func:`petsml.tracking.alias_model.load_alias_model` passes them); otherwise the registry is
asked which version holds this logged model (its MLflow model id, from the model's MLmodel
file), and failing that the version is ``model:<id>``. Nothing here may cost an answer: a
recorder that cannot open logs one warning and the model serves without recording.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MONITOR_KEY = "monitor"  # params.yaml's monitor: section, as logged
OVERRIDES_KEY = "monitor_overrides"  # a loader's changes to it
IDENTITY_KEYS = ("model_name", "model_version", "model_alias")
SOURCE_KEY = "monitor_source"  # serve | web | predict: which door the photo came in by
DEFAULT_SOURCE = "serve"
_PAUSED = threading.local()  # set while a model is being logged: MLflow predicts its example


@contextmanager
def recording_paused() -> Iterator[None]:
    """No recorder opens in this thread inside the block (logging a model loads it and predicts
    its input example: that photo is not traffic)."""
    _PAUSED.on = True
    try:
        yield
    finally:
        _PAUSED.on = False


def logged_config(monitor: Mapping[str, Any] | None, model_name: str) -> dict[str, Any]:
    """The model_config keys the recording hook reads, as logged with the model (every key
    must be logged to be overridable at load: MLflow ignores unknown override keys)."""
    return {
        MONITOR_KEY: dict(monitor) if monitor is not None else None,
        OVERRIDES_KEY: {},
        "model_name": model_name,
        "model_version": "",
        "model_alias": "",
        SOURCE_KEY: DEFAULT_SOURCE,
    }


def _model_id(model_dir: Path | None) -> str:
    import yaml

    if model_dir is None or not (model_dir / "MLmodel").is_file():
        return ""
    return str((yaml.safe_load((model_dir / "MLmodel").read_text()) or {}).get("model_id") or "")


def _registry_version(name: str, model_id: str) -> tuple[str, str]:
    """(version, alias) of the registry version holding logged model ``model_id``; best effort
    (a served model need not reach a tracking server)."""
    if not (name and model_id):
        return "", ""
    try:
        from mlflow import MlflowClient

        client = MlflowClient()
        for version in client.search_model_versions(f"name='{name}'"):
            # registered from the logged model: its source is models:/<model id>
            if model_id in (getattr(version, "model_id", None), version.source.split("/")[-1]):
                # a search leaves aliases out: the version itself has them
                aliases = list(client.get_model_version(name, version.version).aliases or [])
                alias = "champion" if "champion" in aliases else (aliases[0] if aliases else "")
                return str(version.version), alias
    except Exception as error:  # noqa: BLE001 - no registry here: record the model id instead
        log.info("monitoring: no registry to name the version (%s)", error)
    return "", ""


def open_recorder(config: Mapping[str, Any] | None, model_dir: Path | None, class_names):
    """A :class:`~petsml.monitoring.recorder.Recorder` per ``config``, or None (recording off,
    a model logged without a ``monitor`` section, or a store that cannot be opened)."""
    config = dict(config or {})
    section = {**(config.get(MONITOR_KEY) or {}), **(config.get(OVERRIDES_KEY) or {})}
    if not section.get("log") or getattr(_PAUSED, "on", False):
        return None
    try:
        from petsml.monitoring.record import ModelRef
        from petsml.monitoring.recorder import Recorder
        from petsml.monitoring.settings import MonitorSettings

        settings = MonitorSettings.from_mapping(section)
        if not settings.log:
            return None
        name, version, alias = (str(config.get(key) or "") for key in IDENTITY_KEYS)
        if not version:
            model_id = _model_id(model_dir)
            version, found_alias = _registry_version(name, model_id)
            alias = alias or found_alias
            version = version or (f"model:{model_id}" if model_id else "unknown")
        return Recorder.open(settings, ModelRef(name, version, alias), class_names,
                             source=str(config.get(SOURCE_KEY) or DEFAULT_SOURCE))  # fmt: skip
    except Exception as error:  # noqa: BLE001 - serving goes on without recording
        log.warning("monitoring: predictions will not be recorded: %s: %s",
                    type(error).__name__, error)  # fmt: skip
        return None
