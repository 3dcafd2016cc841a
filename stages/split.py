"""DVC stage `split`: the source's test list (or a stratified test slice of an image folder
without one), seeded stratified validation slice of the rest; a folder's class list."""

import pandas as pd

from petsml import paths
from petsml.config import load_params
from petsml.data.manifest import read_manifest
from petsml.data.sources import get_source
from petsml.data.split import make_splits, write_classes
from petsml.io import atomic_dir
from petsml.stage import run_stage

# The params.yaml keys this stage reads. dvc.yaml's params: list is written
# from this (`make deps`), and the suite checks every key the stage reads is here.
PARAMS = (
    "data.source",
    "data.test_list",
    "split",
)


def main() -> None:
    params = load_params()
    source = get_source(params.data.source)
    manifest = read_manifest(paths.MANIFEST)
    quarantine = pd.read_csv(paths.QUARANTINE, keep_default_na=False)
    test_fraction = params.split.test_fraction if source.draws_test(params.data) else None
    splits = make_splits(
        manifest, quarantine, params.split.val_fraction, params.split.seed, test_fraction
    )
    classes = source.classes(manifest)
    with atomic_dir(paths.SPLITS) as tmp:
        for name, frame in splits.items():
            frame.to_csv(tmp / f"{name}.csv", index=False)
        if classes is not None:
            write_classes(tmp, classes)


if __name__ == "__main__":
    run_stage("split", main)
