"""The neighbour index each logged model carries (``petsml.similar``), built once per embedding.

The track stage logs one model per strategy. A frozen strategy embeds photos with the pretrained
backbone: its index comes from the featurize stage's penultimate features, shared by every
frozen strategy of that backbone. A fine-tuned strategy's comes from the embeddings the evaluate
stage wrote from its own pass (``data/embeddings``). Nothing here runs a network. The index goes
inside the logged model (a pyfunc artifact), so a registered version and its index are the same
MLflow object and can never disagree.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from petsml import paths
from petsml.errors import PetsError

log = logging.getLogger(__name__)


class IndexFiles:
    """``index_for(strategy, spec)`` -> the path of that model's index ``.npz`` under
    ``folder``."""

    def __init__(self, root: str | Path, folder: str | Path) -> None:
        self.root = Path(root)
        self.folder = Path(folder)
        self._built: dict[str, Path] = {}

    def _vectors(self, strategy: str, spec: dict) -> tuple[str, np.ndarray, np.ndarray]:
        """(key, image ids, embeddings) of the photos ``strategy``'s model embeds."""
        from petsml.data.feature_file import read_features
        from petsml.evaluation.embeddings import read_embeddings

        if spec.get("frozen_backbone"):
            parts = [read_features(self.root / paths.FEATURES, s) for s in paths.INDEX_SPLITS]
            ids = np.concatenate([part.image_id for part in parts])
            vectors = np.concatenate([part.penultimate for part in parts])
            return f"frozen-{spec.get('backbone')}", ids, vectors
        found = read_embeddings(self.root / paths.EMBEDDINGS, strategy)
        if found is None:
            raise PetsError(f"{paths.EMBEDDINGS} holds no embeddings of {strategy}; run "
                            "`dvc repro evaluate`")  # fmt: skip
        return strategy, *found

    def index_for(self, strategy: str, spec: dict) -> Path | None:
        """The index file, or None (logged as a warning) when the embeddings are not there."""
        from petsml.similar.embed import build_index

        try:
            key, ids, vectors = self._vectors(strategy, spec)
            if key not in self._built:
                path = self.folder / f"neighbours-{len(self._built)}.npz"
                build_index(ids, vectors, self.root).save(path)
                self._built[key] = path
        except PetsError as error:
            log.warning("%s: logged without a neighbour index: %s", strategy, error)
            return None
        return self._built[key]
