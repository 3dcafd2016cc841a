"""DVC stage `track`: log this pipeline state to MLflow as a parent run with one child per
strategy (params, curves, metrics, plots, datasets, pyfunc model); write reports/mlflow_runs.json.

Tracking an unchanged pipeline again reuses its runs instead of logging duplicates.
"""

from petsml import paths
from petsml.config import load_params
from petsml.stage import run_stage

# The params.yaml keys this stage reads: all of them (the parent run records every param,
# each logged model its serve limits). dvc.yaml's params: list is written from this
# (`make deps`), and the suite checks every key the stage reads is here.
PARAMS = ("params.yaml:",)


def main() -> None:
    from petsml.tracking.runs import track_pipeline

    params = load_params()
    track_pipeline(params, root=".", out=paths.MLFLOW_RUNS)


if __name__ == "__main__":
    run_stage("track", main)
