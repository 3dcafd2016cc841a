"""DVC stage `params`: the whole params.yaml checked before any other stage runs.

Every stage validates the params it loads, but only when it re-runs; this stage depends on
params.yaml itself, so any edit to it (or to the schema) is checked on the next `dvc repro`,
and a misspelt key stops the pipeline naming the key and the nearest valid one. Its outs:

- a constant marker that `download` depends on: DVC runs this stage first, and a passing check
  leaves the marker's hash as it was, so nothing downstream re-runs because of it;
- ``data/strategies/<strategy>.json`` for each strategy in ``train.strategies``: its checked
  settings (``{}`` for a strategy without any). ``train@<strategy>`` depends on its own file, so
  editing one strategy's section re-runs that strategy alone, and a strategy needs no section
  at all when it has no settings.
"""

from petsml import paths
from petsml.io import atomic_dir, write_json, write_text
from petsml.params_check import check_params_file
from petsml.stage import run_stage

MARKER = paths.PARAMS_OK
MARKER_TEXT = "params.yaml passed petsml.params_check.check_params_file\n"


def main() -> None:
    params = check_params_file()
    write_text(MARKER, MARKER_TEXT)
    with atomic_dir(paths.STRATEGY_SETTINGS) as tmp:
        for strategy in params.train.strategies:
            settings = params.settings_of(strategy)
            write_json(tmp / f"{strategy}.json", settings.model_dump() if settings else {})


if __name__ == "__main__":
    run_stage("params", main)
