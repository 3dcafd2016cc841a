"""Embeddings of photos with a classifier's own backbone, and the index of a project.

The embedding is the backbone's pooled penultimate feature (``forward_features``) in float32 on
the same input as the classifier sees (``load_rgb``'s decode size, then ``to_input``'s centre
crop and normalisation), so a query embedded at prediction time and the indexed photos agree.
The index is built from embeddings the pipeline already computed (:func:`build_index`): the
featurize stage's penultimate features for a frozen backbone, the evaluate stage's pass for a
fine-tuned one; no photo is embedded twice.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from petsml import paths
from petsml.data.tensors import to_input
from petsml.errors import PetsError
from petsml.models.classifier import Classifier
from petsml.similar.index import NeighbourIndex

log = logging.getLogger(__name__)

INDEX_SPLITS = paths.INDEX_SPLITS  # what a query is compared with: never the test photos
BATCH_SIZE = 64


def embed(model: Classifier, images_u8: np.ndarray, batch_size: int = BATCH_SIZE) -> np.ndarray:
    """(N, D) float32 backbone embeddings of (N, S, S, 3) uint8 photos (not normalised)."""
    prep = model.backbone.preprocessing
    device = next(model.parameters()).device
    model = model.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(images_u8), batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(images_u8[start : start + batch_size]))
            x = to_input(batch.to(device), list(prep.mean), list(prep.std),
                         size=int(prep.input_size))  # fmt: skip
            out.append(model.backbone.forward_features(x.float()).float().cpu().numpy())
    if not out:
        return np.zeros((0, model.backbone.feature_dim), np.float32)
    return np.concatenate(out).astype(np.float32, copy=False)


def _photos(root: Path, splits: Sequence[str]):
    import pandas as pd

    frames = []
    for name in splits:
        csv = root / paths.split_csv(name)
        if not csv.is_file():
            raise PetsError(f"{csv}: split missing; run `dvc repro split` first.")
        frames.append(pd.read_csv(csv, usecols=["image_id", "file", "breed"],
                                  keep_default_na=False, dtype=str))  # fmt: skip
    return pd.concat(frames, ignore_index=True)


def build_index(
    image_ids: Sequence[str], vectors: np.ndarray, root: str | Path = ".", splits=INDEX_SPLITS
) -> NeighbourIndex:
    """The neighbour index of the project's ``splits`` photos from embeddings already computed
    (``vectors[i]`` is ``image_ids[i]``'s); rows follow the split CSVs, matched by image id."""
    frame = _photos(Path(root), splits)
    row = {image_id: i for i, image_id in enumerate(map(str, image_ids))}
    missing = [i for i in frame["image_id"] if i not in row]
    if missing:
        raise PetsError(
            f"no embedding for {len(missing)} indexed photo(s) (e.g. {missing[0]}): the "
            f"embeddings are older than {paths.SPLITS}; re-run `dvc repro`."
        )
    take = np.array([row[i] for i in frame["image_id"]], dtype=np.int64)
    vectors = np.asarray(vectors, dtype=np.float32)[take]
    log.info("neighbour index: %d photos, %d dimensions", len(frame), vectors.shape[1])
    return NeighbourIndex.build(vectors, frame["image_id"], frame["breed"], frame["file"])
