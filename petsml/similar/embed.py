"""Embeddings of photos with a trained classifier's own backbone, and the index of a project.

The embedding is the backbone's pooled penultimate feature (``forward_features``), computed in
float32 on the same input as the classifier sees (``load_rgb``'s decode size, then
``to_input``'s centre crop and normalisation), so a query photo embedded at prediction time and
the indexed photos agree exactly. Indexed photos come from the decoded cache when it matches the
model's decode size (the pipeline's case) and from the raw photos otherwise.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from petsml import paths
from petsml.data.decode import DecodedCacheError, DecodedImages, load_rgb
from petsml.data.tensors import to_input
from petsml.errors import PetsError
from petsml.models.classifier import Classifier
from petsml.similar.index import NeighbourIndex

log = logging.getLogger(__name__)

INDEX_SPLITS = ("train", "val")  # what a query is compared with: never the test photos
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


def _pixels(root: Path, frame, decode_size: int) -> np.ndarray:
    """Decoded photos: from the cache when it fits, else from data/raw."""
    try:
        cache = DecodedImages.open(root / paths.DECODED)
        if cache.size == decode_size:
            return cache.take(frame["image_id"])
        log.info("decoded cache is %d px, the model wants %d: decoding the raw photos",
                 cache.size, decode_size)  # fmt: skip
    except DecodedCacheError:
        pass
    out = np.empty((len(frame), decode_size, decode_size, 3), np.uint8)
    for row, file in enumerate(frame["file"]):
        path = root / paths.RAW / file
        try:
            out[row] = load_rgb(path, decode_size)
        except OSError as error:
            raise PetsError(f"{path}: cannot read it for the neighbour index ({error}); "
                            "run `dvc repro download`.") from None  # fmt: skip
    return out


def build_index(
    model: Classifier, decode_size: int, root: str | Path = ".", splits=INDEX_SPLITS
) -> NeighbourIndex:
    """The neighbour index of the project's ``splits`` photos under ``model``'s backbone."""
    root = Path(root)
    frame = _photos(root, splits)
    vectors = embed(model, _pixels(root, frame, decode_size))
    log.info("neighbour index: %d photos, %d dimensions", len(frame), vectors.shape[1])
    return NeighbourIndex.build(vectors, frame["image_id"], frame["breed"], frame["file"])
