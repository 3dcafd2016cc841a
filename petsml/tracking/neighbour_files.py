"""The neighbour index each logged model carries (``petsml.similar``), built once per backbone.

The track stage logs one model per strategy; strategies that share their backbone's weights (the
frozen-feature ones all use the same pretrained backbone) share one index, built once. The index
goes inside the logged model (a pyfunc artifact), so a registered version and its index are the
same MLflow object and can never disagree.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from petsml.errors import PetsError

log = logging.getLogger(__name__)


class IndexFiles:
    """``index_for(model_pt)`` -> the path of that model's index ``.npz`` under ``folder``."""

    def __init__(self, root: str | Path, folder: str | Path) -> None:
        self.root = Path(root)
        self.folder = Path(folder)
        self._by_backbone: dict[str, Path] = {}

    def index_for(self, model_pt: str | Path) -> Path | None:
        """The index file, or None (logged as a warning) when the photos cannot be read."""
        from petsml.models.classifier import load_classifier
        from petsml.similar.embed import build_index

        model, spec = load_classifier(model_pt, map_location="cpu")
        digest = hashlib.sha256()
        for name, tensor in sorted(model.backbone.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        key = f"{digest.hexdigest()[:16]}-{int(spec['decode_size'])}"
        if key not in self._by_backbone:
            path = self.folder / f"neighbours-{key}.npz"
            try:
                build_index(model, int(spec["decode_size"]), self.root).save(path)
            except PetsError as error:
                log.warning("%s: logged without a neighbour index: %s", model_pt, error)
                return None
            self._by_backbone[key] = path
        return self._by_backbone[key]
