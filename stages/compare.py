"""DVC stage `compare`: which strategy to ship, with what it costs (after evaluate).

Writes reports/comparison.{json,md,html} (the strategies ranked by validation accuracy with
test quality, training time, latency per image at batch 1 and 64 on the run's device,
parameters, model size, the ONNX fp32/int8 size, latency and parity when `compare.onnx` asks,
the transfer gain over scratch, the Pareto front and the advice check) and reports/comparison/
(data for `dvc plots show`, the figures).
"""

from petsml.compare_onnx import onnx_columns
from petsml.config import load_params
from petsml.evaluation.comparison import compare_all
from petsml.stage import run_stage

# The params.yaml keys this stage reads. dvc.yaml's params: list is written
# from this (`make deps`), and the suite checks every key the stage reads is here.
PARAMS = (
    "train.strategies",
    "train.device",
    "train.seed",
    "compare",
)


def main() -> None:
    params = load_params()
    report = compare_all(params, extras=[onnx_columns(params.compare)])
    print(f"compare: advice {report['advice']['statement']}")


if __name__ == "__main__":
    run_stage("compare", main)
