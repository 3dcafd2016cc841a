"""DVC stage `manifest`: measure every file once and record it next to its annotation.

The source (``data.source``) says how files and labels are found: the official layout in
``data/raw`` or an image folder; the table has the same columns for both.
"""

import pandas as pd

from petsml import paths
from petsml.config import load_params
from petsml.data.sources import get_source
from petsml.io import atomic_path
from petsml.stage import run_stage

# The params.yaml keys this stage reads. dvc.yaml's params: list is written
# from this (`make deps`), and the suite checks every key the stage reads is here.
PARAMS = (
    "data.source",
    "data.folder",
    "data.test_list",
    "decode.workers",
)


def main() -> None:
    params = load_params()
    source = get_source(params.data.source)
    table: pd.DataFrame = source.manifest(params.data, params.decode.workers)
    with atomic_path(paths.MANIFEST, suffix=".csv") as tmp:
        table.to_csv(tmp, index=False)


if __name__ == "__main__":
    run_stage("manifest", main)
