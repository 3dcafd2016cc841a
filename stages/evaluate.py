"""DVC stage `evaluate`: every trained strategy scored on the untouched test split.

Writes reports/metrics.json, reports/eval/<strategy>/ (predictions, per-class scores, confused
pairs, figures) and reports/plots/ (data for `dvc plots show`).
"""

from petsml.config import load_params
from petsml.evaluation.report import evaluate_all
from petsml.stage import run_stage


def main() -> None:
    evaluate_all(load_params())


if __name__ == "__main__":
    run_stage("evaluate", main)
