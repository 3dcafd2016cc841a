"""DVC stage `mlflow_store` (always runs): check that the MLflow store still holds what
reports/mlflow_runs.json and reports/registry.json name; write reports/mlflow_store.json.

`track` and `register` depend on that file. It holds the tracking URI, the experiment and a
store id that changes only when the store lost something (a deleted mlruns/mlflow.db, a new
MLFLOW_TRACKING_URI, deleted runs or versions), so a healthy store costs one quick read
(SQLite is read directly, without importing MLflow) and a lost one re-runs both stages.
"""

from petsml.config import load_params
from petsml.stage import run_stage
from petsml.tracking.store_check import FINGERPRINT, refresh_fingerprint

# The params.yaml keys this stage reads. dvc.yaml's params: list is written
# from this (`make deps`), and the suite checks every key the stage reads is here.
PARAMS = ("mlflow.experiment",)


def main() -> None:
    params = load_params()
    refresh_fingerprint(params.mlflow.experiment, root=".", out=FINGERPRINT)


if __name__ == "__main__":
    run_stage("mlflow_store", main)
