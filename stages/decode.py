"""DVC stage `decode`: every split image decoded once into a uint8 memmap.

Files are read from ``data.folder`` (``data/raw`` for the official data), which is a dep.
"""

from pathlib import Path

import pandas as pd

from petsml import paths
from petsml.config import load_params
from petsml.data.decode import decode_images
from petsml.stage import run_stage

# The params.yaml keys this stage reads. dvc.yaml's params: list is written
# from this (`make deps`), and the suite checks every key the stage reads is here.
PARAMS = (
    "data.folder",
    "decode",
)


def main() -> None:
    params = load_params()
    frame = pd.concat(
        [pd.read_csv(paths.split_csv(name), keep_default_na=False) for name in paths.SPLIT_NAMES]
    )
    decode_images(
        frame, Path(params.data.folder), paths.DECODED, params.decode.size, params.decode.workers
    )


if __name__ == "__main__":
    run_stage("decode", main)
