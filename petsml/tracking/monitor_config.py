"""What a loader of the served model passes so it records its answers (or does not).

The logged model carries params.yaml's ``monitor:`` section (:mod:`petsml.tracking.pyfunc_monitor`);
a loader inside the project (``pets web``, ``pets predict --record``) passes the project's own
section instead, its ``store`` read relative to the params file's folder, and says which model
version answered and by which door. A loader that does not record (``pets similar``,
``pets predict`` without ``--record``, the evaluation of a loaded model) turns it off, so
reading a model never writes traffic.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from petsml.tracking.pyfunc_monitor import OVERRIDES_KEY, SOURCE_KEY


def project_settings(params_file: str | Path):
    """The ``monitor:`` section of ``params_file`` with ``store``, ``archive_dir`` and ``reports``
    made absolute against the params file's folder (the project root), unless a URL."""
    from petsml.monitoring.settings import load_settings
    from petsml.monitoring.store import is_postgres

    params_file = Path(params_file)
    settings = load_settings(params_file)
    root = params_file.resolve().parent

    def rooted(value: str) -> str:
        return value if is_postgres(value) else str(root / Path(value).expanduser())

    return settings.replace(store=rooted(settings.store), archive_dir=rooted(settings.archive_dir),
                            reports=rooted(settings.reports))  # fmt: skip


def loader_config(
    record: bool, source: str, params_file: str | Path | None = None
) -> dict[str, Any]:
    """model_config entries for a loader: recording off, or per the project's settings
    (``params_file``, whose ``monitor.log`` still decides; None or absent: the section logged
    with the model)."""
    if not record:
        return {OVERRIDES_KEY: {"log": False}}
    config: dict[str, Any] = {SOURCE_KEY: source}
    if params_file is not None and Path(params_file).is_file():
        # monitor.log still decides: --record and the web page record only where it is on
        config[OVERRIDES_KEY] = project_settings(params_file).as_dict()
    return config
