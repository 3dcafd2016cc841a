"""DVC stage `split`: official test list, seeded stratified validation slice of trainval."""

import pandas as pd

from petsml import paths
from petsml.config import load_params
from petsml.data.manifest import read_manifest
from petsml.data.split import make_splits
from petsml.io import atomic_dir
from petsml.stage import run_stage


def main() -> None:
    params = load_params()
    manifest = read_manifest(paths.MANIFEST)
    quarantine = pd.read_csv(paths.QUARANTINE, keep_default_na=False)
    splits = make_splits(manifest, quarantine, params.split.val_fraction, params.split.seed)
    with atomic_dir(paths.SPLITS) as tmp:
        for name, frame in splits.items():
            frame.to_csv(tmp / f"{name}.csv", index=False)


if __name__ == "__main__":
    run_stage("split", main)
