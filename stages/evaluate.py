"""DVC stage `evaluate`: every trained strategy scored on the untouched test split.

Writes reports/metrics.json, reports/eval/<strategy>/ (predictions, per-class scores, confused
pairs, figures) and reports/plots/ (data for `dvc plots show`).
"""

from petsml.config import load_params
from petsml.evaluation.evaluate import evaluate_all
from petsml.stage import run_stage

# The params.yaml keys this stage reads. dvc.yaml's params: list is written
# from this (`make deps`), and the suite checks every key the stage reads is here.
PARAMS = (
    "data.task",
    "train.strategies",
    "train.device",
    "features.batch_size",
    "evaluate",
)


def main() -> None:
    evaluate_all(load_params())


if __name__ == "__main__":
    run_stage("evaluate", main)
