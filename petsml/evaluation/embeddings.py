"""``data/embeddings/<strategy>.npz``: a fine-tuned model's embeddings of the photos its
similar-photo index holds, written by the evaluate stage from the same pass as its test photos
and read by the track stage, which builds the index without running the model again.

A frozen strategy has no file here: its embeddings are the featurize stage's penultimate
features (:mod:`petsml.data.feature_file`). ``index.json`` lists what the folder holds, so the
folder exists (a DVC output) even when no strategy fine-tunes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from petsml.io import atomic_dir, read_json, write_json

LIST = "index.json"


def write_embeddings(out_dir: str | Path, rows: dict[str, tuple[list[str], np.ndarray]]) -> None:
    """Replace ``out_dir`` with one ``<strategy>.npz`` (image_id, embedding) per entry."""
    with atomic_dir(out_dir) as tmp:
        for strategy, (ids, vectors) in rows.items():
            np.savez(tmp / f"{strategy}.npz", image_id=np.asarray(ids, dtype=str),
                     embedding=np.asarray(vectors, dtype=np.float32))  # fmt: skip
        write_json(tmp / LIST, {"strategies": sorted(rows)})


def read_embeddings(out_dir: str | Path, strategy: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(image ids, embeddings) of ``strategy``, or None when the folder holds none for it."""
    folder = Path(out_dir)
    if not (folder / LIST).is_file() or strategy not in read_json(folder / LIST)["strategies"]:
        return None
    with np.load(folder / f"{strategy}.npz", allow_pickle=False) as data:
        return data["image_id"], data["embedding"]
