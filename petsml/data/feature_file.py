"""The cached-features contract: ``data/features/<split>.npz``, written by the featurize stage's
one frozen pass and read by everything downstream that would otherwise run the backbone again.

Each split's file holds, row-aligned with ``image_id``:

- ``penultimate``: the pooled penultimate vector (what ``feature_extractor`` fits on, and the
  embedding of the similar-photo index);
- ``block_<i>``: the channel mean of block ``i``'s output, for every block before the last
  (what ``svm_early`` fits on at ``model.early_block``, and the advise stage's probe curve); the
  last block's is ``penultimate`` itself;
- ``imagenet_<stat>``: the pretrained ImageNet classifier read on the penultimate vector, when
  the backbone ships one (:data:`IMAGENET_STATS`): label-free evidence of how ImageNet-like the
  photos are, and of photos that show no animal at all.

The test split is always computed in float32, as the shipped model runs, so evaluating a frozen
strategy is the saved head applied to these rows. The readers sit in layers that may not import
each other (training, evaluation, advice), so the one reader and the one way of matching rows to
image ids (never row order) live here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from petsml import paths
from petsml.errors import PetsError

BLOCK = "block_{}"
IMAGENET = "imagenet_{}"
# max_prob: top-1 probability; entropy: normalised to [0, 1]; top1: the class index; animal: the
# probability mass on ImageNet's animal classes (indices 0-397)
IMAGENET_STATS = ("max_prob", "entropy", "top1", "animal")
ANIMAL_CLASSES = 398


class FeatureFileError(PetsError):
    """The cached features are missing or do not cover what the caller needs."""


@dataclass
class SplitFeatures:
    """One split's cached features (see the module docstring for each array)."""

    image_id: np.ndarray
    penultimate: np.ndarray
    blocks: list[np.ndarray]  # every block but the last, whose output is ``penultimate``
    imagenet: dict[str, np.ndarray] = field(default_factory=dict)
    precision: str = "fp32"
    backbone: str = ""  # model.backbone as given, and its input size: what the rows came from
    input_size: int = 0

    def __len__(self) -> int:
        return int(len(self.image_id))

    @property
    def n_blocks(self) -> int:
        return len(self.blocks) + 1

    def block(self, index: int) -> np.ndarray:
        """Block ``index``'s pooled output (negative counts from the end; the last block's is
        ``penultimate``)."""
        i = index + self.n_blocks if index < 0 else index
        if not 0 <= i < self.n_blocks:
            raise FeatureFileError(
                f"block {index} is out of range: the cached features hold {self.n_blocks} blocks"
            )
        return self.penultimate if i == self.n_blocks - 1 else self.blocks[i]

    def rows(self, image_ids, source: str) -> np.ndarray:
        """Row indices of ``image_ids`` (in that order); names what is missing."""
        return rows_for(self.image_id, image_ids, source)


def feature_path(features_dir: str | Path, split: str) -> Path:
    return Path(features_dir) / f"{split}.npz"


def write_features(features_dir: str | Path, split: str, features: SplitFeatures) -> None:
    """Write one split's arrays (call inside an atomic directory)."""
    arrays = {
        "image_id": np.asarray(features.image_id),
        "penultimate": features.penultimate,
        "precision": np.asarray(features.precision),
        "backbone": np.asarray(features.backbone),
        "input_size": np.asarray(features.input_size),
        **{BLOCK.format(i): x for i, x in enumerate(features.blocks)},
        **{IMAGENET.format(k): v for k, v in features.imagenet.items()},
    }
    np.savez(feature_path(features_dir, split), **arrays)


def read_features(features_dir: str | Path, split: str) -> SplitFeatures:
    path = feature_path(features_dir, split)
    if not path.exists():
        raise FeatureFileError(f"{path}: cached features missing. Run `dvc repro featurize` first.")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError) as error:
        raise FeatureFileError(
            f"{path}: unreadable ({error}); run `dvc repro featurize`."
        ) from error
    if "penultimate" not in arrays or "image_id" not in arrays:
        raise FeatureFileError(
            f"{path}: not this project's feature file (no penultimate features); run "
            "`dvc repro featurize`."
        )
    blocks = []
    while BLOCK.format(len(blocks)) in arrays:
        blocks.append(arrays[BLOCK.format(len(blocks))])
    keys = {k: IMAGENET.format(k) for k in IMAGENET_STATS}
    imagenet = {k: arrays[key] for k, key in keys.items() if key in arrays}
    return SplitFeatures(
        image_id=arrays["image_id"],
        penultimate=arrays["penultimate"],
        blocks=blocks,
        imagenet=imagenet,
        precision=str(arrays.get("precision", "fp32")),
        backbone=str(arrays.get("backbone", "")),
        input_size=int(arrays.get("input_size", 0)),
    )


def rows_for(known_ids: np.ndarray, image_ids, source: str) -> np.ndarray:
    """Row indices of ``image_ids`` (in that order) among ``known_ids``; names what is missing."""
    row = {image_id: i for i, image_id in enumerate(np.asarray(known_ids).tolist())}
    missing = [i for i in image_ids if i not in row]
    if missing:
        raise FeatureFileError(
            f"{source} lacks {len(missing)} image(s) of {paths.SPLITS} (e.g. {missing[0]}); the "
            "features are older than the splits. Re-run `dvc repro featurize`."
        )
    return np.array([row[i] for i in image_ids], dtype=np.int64)
