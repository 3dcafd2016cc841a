"""Train / validation / test splits.

Test is the official ``test.txt`` list, untouched, so results compare with the literature.
Validation is a per-breed stratified slice of trainval, seeded, so a model is tuned on photos of
every breed and the split is reproducible from ``split.seed``. An image folder without a test
list gets a stratified, seeded test slice of each class first (``test_fraction``), and its class
list is written beside the splits (``classes.csv``): the official names are fixed, a folder's
are its own.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from petsml.data.breeds import SPECIES, labels_for
from petsml.errors import PetsError

log = logging.getLogger(__name__)

SPLIT_COLUMNS = ["image_id", "file", "breed", "class_id", "species", "species_id", "sha256"]
EXCLUDED_COLUMNS = ["image_id", "split", "reason", "detail"]  # data/data_issues/excluded.csv
FIT_SPLITS = ("train", "val")  # the splits exclusions apply to
CLASSES = "classes.csv"  # class_id,name: written for sources with their own classes


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
    species_id = rows["species"].map({name: i for i, name in enumerate(SPECIES)})
    rows["species_id"] = species_id.fillna(-1).astype(int)  # -1: no species (a folder's class)
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


def stratified_test(rows: pd.DataFrame, fraction: float, seed: int) -> pd.Series:
    """Boolean mask of test rows: ``fraction`` of each class, at least one if it has three
    (so train and validation keep one each), drawn from its own seeded stream."""
    rng = np.random.default_rng([seed, 1])  # not the validation draw's stream
    is_test = pd.Series(False, index=rows.index)
    for _, group in rows.sort_values("image_id").groupby("breed", sort=True):
        n_test = min(max(int(round(len(group) * fraction)), 1), len(group) - 2)
        if n_test > 0:
            is_test[rng.choice(group.index.to_numpy(), size=n_test, replace=False)] = True
    return is_test


def make_splits(
    manifest: pd.DataFrame,
    quarantine: pd.DataFrame,
    val_fraction: float,
    seed: int,
    test_fraction: float | None = None,
) -> dict[str, pd.DataFrame]:
    """Train/val/test frames. ``test_fraction`` set: test is drawn per class from the usable
    rows (an image folder without a test list); otherwise it is the rows marked ``test``."""
    rows = usable_rows(manifest, quarantine)
    if test_fraction is not None:
        is_test = stratified_test(rows, test_fraction, seed)
        rows = rows.assign(split=rows["split"].where(~is_test, "test"))
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


def write_classes(folder: Path, names: list[str]) -> None:
    """``classes.csv`` (class_id, name) in a splits folder being written."""
    pd.DataFrame({"class_id": range(len(names)), "name": names}).to_csv(
        folder / CLASSES, index=False
    )


def class_names(splits_dir: str | Path, task: str) -> list[str]:
    """Class names, index = label: the splits' ``classes.csv`` when the source wrote one (an
    image folder), else the official names of ``task``."""
    path = Path(splits_dir) / CLASSES
    if not path.is_file():
        return list(labels_for(task))
    frame = pd.read_csv(path, keep_default_na=False, dtype={"name": str})
    if frame["class_id"].tolist() != list(range(len(frame))):
        raise PetsError(f"{path}: class ids are not 0..{len(frame) - 1}; re-run `dvc repro split`")
    return frame["name"].tolist()


def load_split(path, task: str) -> pd.DataFrame:
    """A split CSV with a ``label`` column for ``task`` (breed -> class_id, species -> 0/1)."""
    frame = pd.read_csv(
        path, keep_default_na=False, dtype={"sha256": str, "breed": str, "image_id": str}
    )
    labels_for(task)  # validates the task name
    frame["label"] = (frame["class_id"] if task == "breed" else frame["species_id"]).astype("int64")
    return frame


def read_excluded(path: str | Path) -> pd.DataFrame:
    """The exclusion list (:data:`EXCLUDED_COLUMNS`), checked: only train and val rows."""
    path = Path(path)
    try:
        frame = pd.read_csv(path, keep_default_na=False, dtype=str)
    except (OSError, ValueError, pd.errors.ParserError) as error:
        raise PetsError(f"{path}: unreadable ({error}); re-run `dvc repro data_issues`.") from None
    missing = [c for c in EXCLUDED_COLUMNS if c not in frame.columns]
    if missing:
        raise PetsError(
            f"{path}: lacks column(s) {', '.join(missing)}; it is the data_issues stage's "
            "output, re-run `dvc repro data_issues` instead of editing it."
        )
    wrong = sorted(set(frame["split"]) - set(FIT_SPLITS))
    if wrong:
        raise PetsError(
            f"{path}: excludes {wrong[0]!r} rows; only {' and '.join(FIT_SPLITS)} photos can be "
            "left out (the test split stays whole). Re-run `dvc repro data_issues`."
        )
    return frame[EXCLUDED_COLUMNS]


def load_fit_split(
    splits_dir: str | Path, split: str, task: str, excluded: str | Path | None
) -> pd.DataFrame:
    """``split`` (train or val) as :func:`load_split` reads it, less the rows ``excluded`` lists
    for it. ``excluded`` None: nothing is left out (a library caller without the data_issues
    stage); a path that does not exist is an error naming the stage that writes it."""
    if split not in FIT_SPLITS:
        raise ValueError(f"exclusions apply to {FIT_SPLITS}, not {split!r}")
    frame = load_split(Path(splits_dir) / f"{split}.csv", task)
    if excluded is None:
        return frame
    if not Path(excluded).is_file():
        raise PetsError(f"{excluded}: missing. Run `dvc repro data_issues` first.")
    dropped = set(read_excluded(excluded).query("split == @split")["image_id"])
    if not dropped:
        return frame
    keep = ~frame["image_id"].isin(dropped)
    log.info("%s: %d of %d photos excluded (%s)", split, int((~keep).sum()), len(frame), excluded)
    return frame[keep].reset_index(drop=True)
