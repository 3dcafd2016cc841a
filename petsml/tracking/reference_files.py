"""The monitoring reference each logged model carries, computed from cached outputs.

A window of served predictions is compared with the model's own outputs on its validation
photos (:mod:`petsml.monitoring.reference` says why validation). The track stage computes them
here without running the backbone over photos again: a frozen strategy's embeddings are the
featurize stage's penultimate features (``data/features/val.npz``), a fine-tuned one's are the
evaluate stage's pass (``data/embeddings/<strategy>.npz``); the probabilities are the saved
head on those embeddings. Image facts come from each photo's header (and the decoded cache for
the greyscale check, as at prediction time). The file goes inside the logged model (a pyfunc
artifact), so a registry version and its reference are one MLflow object:
:func:`load_reference` reads it back from any ``models:/`` URI.

The reference's probabilities are the head on the unaugmented view's embedding: a model whose
spec asks for test-time augmentation answers with the views' mean, a small difference on
photos of the training distribution, so the reference stays the unaugmented outputs.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np

from petsml import paths
from petsml.errors import PetsError

log = logging.getLogger(__name__)

REFERENCE_ARTIFACT = "reference"  # key of the reference .npz in the pyfunc's artifacts
REFERENCE_SPLIT = "val"


class ReferenceMissingError(PetsError):
    """The model was logged without a monitoring reference."""


def _val_embeddings(root: Path, strategy: str, spec: dict):
    """(image ids, embeddings, the vectors the model's head reads) of the validation photos."""
    from petsml.data.feature_file import feature_path, read_features
    from petsml.evaluation.embeddings import read_embeddings

    feature = spec.get("feature", "penultimate")
    features_file = feature_path(root / paths.FEATURES, REFERENCE_SPLIT)
    if spec.get("frozen_backbone") and (feature != "penultimate" or features_file.is_file()):
        features = read_features(root / paths.FEATURES, REFERENCE_SPLIT)
        return features.image_id, features.penultimate, (
            features.penultimate if feature == "penultimate"
            else features.block(int(spec["early_block"]))
        )  # fmt: skip
    if feature != "penultimate":  # the evaluate stage's embeddings are penultimate features
        raise PetsError(f"{strategy}: an early-block head without {features_file} has no cached "
                        "head inputs; run `dvc repro featurize`")  # fmt: skip
    found = read_embeddings(root / paths.EMBEDDINGS, strategy)
    if found is None:
        raise PetsError(f"{paths.EMBEDDINGS} holds no embeddings of {strategy}; run "
                        "`dvc repro evaluate`")  # fmt: skip
    ids, vectors = found
    val = set(_val_rows(root)["image_id"])
    keep = np.array([str(i) in val for i in ids], dtype=bool)
    return ids[keep], vectors[keep], vectors[keep]


def _val_rows(root: Path):
    import pandas as pd

    return pd.read_csv(root / paths.split_csv(REFERENCE_SPLIT), keep_default_na=False,
                       dtype={"image_id": str, "file": str})  # fmt: skip


def _facts(root: Path, photos: Path, image_ids: np.ndarray) -> list:
    """Header facts of each photo; greyscale judged on the decoded cache when it is there."""
    from petsml.data.decode import DecodedCacheError, DecodedImages
    from petsml.monitoring.record import image_facts

    files = dict(zip(*(_val_rows(root)[c] for c in ("image_id", "file")), strict=True))
    try:
        decoded = DecodedImages.open(root / paths.DECODED)
        arrays = decoded.take([str(i) for i in image_ids])
    except DecodedCacheError:
        arrays = [None] * len(image_ids)
    return [
        image_facts((photos / files[str(i)]).read_bytes(), array)
        for i, array in zip(image_ids, arrays, strict=True)
    ]


def build_model_reference(
    root: str | Path, photos: str | Path, strategy: str, model_pt: str | Path, out: str | Path,
    model_name: str = "",
):  # fmt: skip
    """Write ``strategy``'s reference to ``out`` (see the module docstring); returns it."""
    import torch

    from petsml.models.classifier import load_classifier
    from petsml.monitoring.record import ModelRef
    from petsml.monitoring.reference import build_reference

    root = Path(root)
    model, spec = load_classifier(model_pt, map_location="cpu")
    ids, embeddings, head_inputs = _val_embeddings(root, strategy, dict(spec))
    with torch.inference_mode():
        logits = model.head(torch.from_numpy(np.asarray(head_inputs, dtype=np.float32)))
        probabilities = torch.softmax(logits.float(), dim=1).numpy()
    facts = _facts(root, root / photos, ids)
    reference = build_reference(probabilities, embeddings, facts, spec["class_names"],
                                ModelRef(model_name))  # fmt: skip
    reference.save(out)
    return reference


class ReferenceFiles:
    """``reference_for(strategy, model_pt)`` -> its reference ``.npz`` under ``folder``, or
    None (logged as a warning: the model is still logged, ``pets monitor`` says what is
    missing) when the cached outputs are not there."""

    def __init__(self, root: str | Path, photos: str | Path, folder: str | Path,
                 model_name: str = "") -> None:  # fmt: skip
        self.root, self.photos, self.folder = Path(root), Path(photos), Path(folder)
        self.model_name = model_name

    def reference_for(self, strategy: str, model_pt: str | Path) -> Path | None:
        out = self.folder / f"reference-{strategy}.npz"
        try:
            build_model_reference(self.root, self.photos, strategy, model_pt, out,
                                  self.model_name)  # fmt: skip
        except (PetsError, OSError, KeyError) as error:
            log.warning("%s: logged without a monitoring reference: %s", strategy, error)
            return None
        return out


def load_reference(model_uri: str):
    """The monitoring reference logged inside the model at ``model_uri`` (``models:/name@alias``,
    ``models:/name/version``, ``models:/<model id>``, ``runs:/<run>/model``)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from petsml.monitoring.reference import Reference

    with tempfile.TemporaryDirectory(prefix="pets-reference-") as tmp:
        try:
            mlmodel = mlflow.artifacts.download_artifacts(f"{model_uri.rstrip('/')}/MLmodel",
                                                          dst_path=tmp)  # fmt: skip
            from mlflow.models import Model

            flavor = Model.load(mlmodel).flavors.get("python_function", {})
            relative = (flavor.get("artifacts") or {}).get(REFERENCE_ARTIFACT, {}).get("path")
            if not relative:
                raise ReferenceMissingError(
                    f"{model_uri} was logged without a monitoring reference (its validation "
                    "outputs): re-run `dvc repro track` with the featurize/evaluate outputs "
                    "present, then register the new model"
                )
            path = mlflow.artifacts.download_artifacts(
                f"{model_uri.rstrip('/')}/{relative}", dst_path=tmp
            )
        except MlflowException as error:
            raise ReferenceMissingError(
                f"{model_uri}: cannot read its reference: {error}"
            ) from None
        return Reference.load(path)
