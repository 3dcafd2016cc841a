"""The cached-features contract: ``data/features/<split>.npz`` written by featurize, read by the
frozen strategies (to fit) and by evaluation (to compare with the shipped model).

Both readers sit in layers that may not import each other (training, evaluation), so the file's
one reader, and the one way of matching its rows to image ids (never row order), live here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from petsml.errors import PetsError

KINDS = ("penultimate", "early")  # arrays beside ``image_id``


class FeatureFileError(PetsError):
    """The cached features are missing or do not cover what the caller needs."""


def feature_path(features_dir: str | Path, split: str) -> Path:
    return Path(features_dir) / f"{split}.npz"


def write_features(features_dir: str | Path, split: str, arrays: dict[str, np.ndarray]) -> None:
    """Write one split's arrays (call inside an atomic directory)."""
    np.savez(feature_path(features_dir, split), **arrays)


def read_features(features_dir: str | Path, split: str) -> dict[str, np.ndarray]:
    path = feature_path(features_dir, split)
    if not path.exists():
        raise FeatureFileError(f"{path}: cached features missing. Run `dvc repro featurize` first.")
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def rows_for(features: dict[str, np.ndarray], image_ids, source: str) -> np.ndarray:
    """Row indices of ``image_ids`` (in that order) in ``features``; names what is missing."""
    row = {image_id: i for i, image_id in enumerate(features["image_id"].tolist())}
    missing = [i for i in image_ids if i not in row]
    if missing:
        raise FeatureFileError(
            f"{source} lacks {len(missing)} image(s) of data/splits (e.g. {missing[0]}); the "
            "features are older than the splits. Re-run `dvc repro featurize`."
        )
    return np.array([row[i] for i in image_ids], dtype=np.int64)
