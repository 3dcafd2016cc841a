"""DVC stage `manifest`: measure every file once and record it next to its annotation."""

import pandas as pd

from petsml import paths
from petsml.config import load_params
from petsml.data.manifest import build_manifest
from petsml.io import atomic_path
from petsml.stage import run_stage


def main() -> None:
    params = load_params()
    table: pd.DataFrame = build_manifest(paths.RAW, workers=params.decode.workers)
    with atomic_path(paths.MANIFEST, suffix=".csv") as tmp:
        table.to_csv(tmp, index=False)


if __name__ == "__main__":
    run_stage("manifest", main)
