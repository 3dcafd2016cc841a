"""DVC stage `register`: register this execution's best model and run the promotion gate.

The strategy with the best VALIDATION accuracy becomes a new version of
``<registry.model_prefix>-<data.task>`` with alias ``challenger``; it takes ``champion`` only
if it beats the champion on the same test images (McNemar p < ``registry.max_p_value``).
Re-running for the same runs registers nothing new. Writes ``reports/registry.json``; the
previous one (kept by DVC, ``persist: true``) says which champion the store held, so a rebuilt
store does not crown a model that lost to it.
"""

import logging

from petsml import paths
from petsml.config import load_params
from petsml.errors import PetsError
from petsml.io import read_json, write_json
from petsml.stage import run_stage
from petsml.tracking.registration import register_execution

# The params.yaml keys this stage reads. dvc.yaml's params: list is written
# from this (`make deps`), and the suite checks every key the stage reads is here.
PARAMS = (
    "data.source",
    "data.task",
    "data.name",
    "data.folder",
    "registry",
    "serve",
)

log = logging.getLogger("petsml.stages.register")


def _previous_report() -> dict | None:
    try:
        previous = read_json(paths.REGISTRY_REPORT) if paths.REGISTRY_REPORT.is_file() else None
    except (OSError, ValueError) as error:
        log.warning("%s unreadable (%s): no earlier champion on record", paths.REGISTRY_REPORT,
                    error)  # fmt: skip
        return None
    return previous if isinstance(previous, dict) else None


def main() -> None:
    params = load_params()
    if not paths.MLFLOW_RUNS.is_file():
        raise PetsError(f"{paths.MLFLOW_RUNS} not found: run `dvc repro track` first.")
    runs = read_json(paths.MLFLOW_RUNS)
    report = register_execution(
        runs,
        params.registered_model_name,
        params.registry.max_p_value,
        task=params.data.task,
        previous=_previous_report(),
    )
    write_json(paths.REGISTRY_REPORT, report)
    log.info(
        "%s version %s (%s): %s, aliases %s. %s",
        report["model_name"],
        report["version"],
        report["strategy"],
        report["decision"],
        report["aliases"],
        report["reason"],
    )


if __name__ == "__main__":
    run_stage("register", main)
