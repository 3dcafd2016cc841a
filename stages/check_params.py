"""DVC stage `params`: the whole params.yaml checked before any other stage runs.

Every stage validates the params it loads, but only when it re-runs; this stage depends on
params.yaml itself, so any edit to it (or to the schema) is checked on the next `dvc repro`,
and a misspelt key stops the pipeline naming the key and the nearest valid one. Its out is a
constant marker that `download` depends on: DVC runs this stage first, and a passing check
leaves the marker's hash as it was, so nothing downstream re-runs because of it.
"""

from petsml import paths
from petsml.io import write_text
from petsml.params_check import check_params_file
from petsml.stage import run_stage

MARKER = paths.DATA / "params.ok"
MARKER_TEXT = "params.yaml passed petsml.params_check.check_params_file\n"


def main() -> None:
    check_params_file()
    write_text(MARKER, MARKER_TEXT)


if __name__ == "__main__":
    run_stage("params", main)
