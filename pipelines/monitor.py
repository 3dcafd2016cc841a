"""Prefect flow ``pets-monitor``: has the served model's traffic drifted from its reference?

The ``monitor`` deployment (prefect.yaml) runs it every hour. It is ``pets monitor`` as a flow
(:func:`petsml.tracking.monitoring_run.monitor_served`): the latest window of the alias's
recorded answers against the reference logged inside that version, the report written under
``monitor.reports`` and logged to MLflow against the version, the verdict tagged on it. The
flow run ends Completed when nothing drifted (or the window is too small for a verdict) and
Failed on drift, with the verdict line as its message, so the UI, notifications and automations
see drift as a failed run. With ``monitor.retrain_on_drift: true`` a drifted window also starts
the continuous-training deployment (``retrain_deployment``) on this project without waiting for
it: the retrained model is registered as ``challenger`` and the gate decides, as on schedule.

    python -m pipelines.monitor [--project-dir DIR] [--alias champion]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.states import Failed

from petsml.errors import PetsError

FLOW_NAME = "pets-monitor"
DEPLOYMENT_NAME = "monitor"
RETRAIN_DEPLOYMENT = "pets-train/weekly-retrain"


def _retrain(deployment: str, project: Path) -> str:
    """Start ``deployment`` on ``project`` without waiting; returns the new flow run's id."""
    from prefect.deployments import run_deployment

    run = run_deployment(deployment, parameters={"project_dir": str(project)}, timeout=0,
                         tags=["monitor", "drift"])  # fmt: skip
    return str(run.id)


@flow(name=FLOW_NAME)
def monitor_flow(
    project_dir: str | None = None,
    alias: str = "champion",
    model_name: str | None = None,
    tracking_uri: str | None = None,
    last: int | None = None,
    retrain_deployment: str = RETRAIN_DEPLOYMENT,
) -> Any:
    """Monitor the served version once; Failed with the verdict line on drift.

    Args:
        project_dir: the project root holding params.yaml (default: the working directory).
        alias: the registry alias whose version is served.
        model_name: the registered model (default: ``<registry.model_prefix>-<data.task>``).
        tracking_uri: the registry (default: ``MLFLOW_TRACKING_URI``, else the project's store).
        last: predictions in the window (default: ``monitor.window``).
        retrain_deployment: started on drift when ``monitor.retrain_on_drift`` is true.
    """
    from petsml.config import load_params
    from petsml.tracking import store
    from petsml.tracking.monitor_config import project_settings
    from petsml.tracking.monitoring_run import monitor_served

    logger = get_run_logger()
    project = Path(project_dir or ".").expanduser().resolve()
    try:
        params = load_params(project / "params.yaml")
        settings = project_settings(project / "params.yaml")
        found = monitor_served(
            model_name or params.registered_model_name,
            tracking_uri or store.tracking_uri(project),
            alias,
            settings,
            params.mlflow.experiment,
            last=last,
        )
    except PetsError as error:  # a user's error: its message, no traceback
        return Failed(message=f"ERROR: {error}")
    logger.info("%s (report %s)", found.line, found.files["html"])
    if not found.drift:
        return found.as_dict()
    message = found.line
    if settings.retrain_on_drift:
        run_id = _retrain(retrain_deployment, project)
        message += f"; started {retrain_deployment} (flow run {run_id})"
        logger.info("monitor.retrain_on_drift: started %s, flow run %s", retrain_deployment, run_id)
    return Failed(message=message)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.monitor",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--project-dir", default=None, help="project root (default: cwd)")
    parser.add_argument("--alias", default="champion", help="served alias (default %(default)s)")
    args = parser.parse_args(argv)
    state = monitor_flow(project_dir=args.project_dir, alias=args.alias, return_state=True)
    print(state.message or state.name)
    return 0 if state.is_completed() else 3 if (state.message or "").startswith("DRIFT") else 1


if __name__ == "__main__":
    sys.exit(main())
