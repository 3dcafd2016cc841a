"""Train / validation / test splits.

Test is the official ``test.txt`` list, untouched, so results compare with the literature.
Validation is a per-breed stratified slice of trainval, seeded, so a model is tuned on photos of
every breed and the split is reproducible from ``split.seed``.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from petsml.data.breeds import SPECIES, labels_for
from petsml.errors import PetsError

log = logging.getLogger(__name__)

SPLIT_COLUMNS = ["image_id", "file", "breed", "class_id", "species", "species_id", "sha256"]


class SplitLeakError(PetsError):
    """The same image (by id or content) would land in two splits."""


def usable_rows(manifest: pd.DataFrame, quarantine: pd.DataFrame) -> pd.DataFrame:
    """Listed, officially split, decodable images that validation did not quarantine."""
    rows = manifest[
        manifest["listed"].astype(bool)
        & manifest["decodable"].astype(bool)
        & manifest["split"].isin(["trainval", "test"])
        & ~manifest["file"].isin(set(quarantine["file"]))  # by file: ids can repeat (.mat)
    ].copy()
    rows["species_id"] = rows["species"].map({name: i for i, name in enumerate(SPECIES)})
    return rows


def stratified_val(trainval: pd.DataFrame, fraction: float, seed: int) -> pd.Series:
    """Boolean mask of validation rows: ``fraction`` of each breed, at least one if it has two."""
    rng = np.random.default_rng(seed)
    is_val = pd.Series(False, index=trainval.index)
    for _, group in trainval.sort_values("image_id").groupby("breed", sort=True):
        n_val = int(round(len(group) * fraction))
        if len(group) >= 2:
            n_val = min(max(n_val, 1), len(group) - 1)
        else:
            n_val = 0
        chosen = rng.choice(group.index.to_numpy(), size=n_val, replace=False)
        is_val[chosen] = True
    return is_val


def make_splits(
    manifest: pd.DataFrame, quarantine: pd.DataFrame, val_fraction: float, seed: int
) -> dict[str, pd.DataFrame]:
    rows = usable_rows(manifest, quarantine)
    trainval = rows[rows["split"] == "trainval"]
    is_val = stratified_val(trainval, val_fraction, seed)
    splits = {
        "train": trainval[~is_val],
        "val": trainval[is_val],
        "test": rows[rows["split"] == "test"],
    }
    splits = {
        name: frame.sort_values("image_id")[SPLIT_COLUMNS].reset_index(drop=True)
        for name, frame in splits.items()
    }
    assert_disjoint(splits)
    for name, frame in splits.items():
        log.info("%s: %d images, %d breeds", name, len(frame), frame["breed"].nunique())
    return splits


def assert_disjoint(splits: dict[str, pd.DataFrame]) -> None:
    """No image id and no file content (sha256) may be shared between two splits."""
    names = list(splits)
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            for column in ("image_id", "sha256"):
                shared = set(splits[first][column]) & set(splits[second][column])
                if shared:
                    examples = ", ".join(sorted(shared)[:5])
                    raise SplitLeakError(
                        f"{len(shared)} {column} value(s) shared between {first} and {second} "
                        f"(e.g. {examples}). Remove the duplicate photos from the data or fix "
                        "annotations/trainval.txt / test.txt."
                    )


def load_split(path, task: str) -> pd.DataFrame:
    """A split CSV with a ``label`` column for ``task`` (breed -> class_id, species -> 0/1)."""
    frame = pd.read_csv(path, keep_default_na=False, dtype={"sha256": str})
    labels_for(task)  # validates the task name
    frame["label"] = (frame["class_id"] if task == "breed" else frame["species_id"]).astype("int64")
    return frame
