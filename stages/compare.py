"""DVC stage `compare`: which strategy to ship, with what it costs (after evaluate).

Writes reports/comparison.{json,md,html} (the strategies ranked by validation accuracy with
test quality, training time, latency per image at batch 1 and 64 on the run's device,
parameters, model size, the transfer gain over scratch, the Pareto front and the advice check)
and reports/comparison/ (data for `dvc plots show`, the figures).
"""

from petsml.config import load_params
from petsml.evaluation.comparison import compare_all
from petsml.stage import run_stage


def main() -> None:
    report = compare_all(load_params())
    print(f"compare: advice {report['advice']['statement']}")


if __name__ == "__main__":
    run_stage("compare", main)
