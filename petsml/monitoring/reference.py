"""The reference a window is compared with: the champion's own outputs on its validation photos.

Why validation photos: they come from the distribution the model was trained for, and the model
never fitted them, so their softmax outputs are as confident as on new photos of that
distribution. Training photos would not do: a model is surer of photos it fitted, and every
honest window would then look "drifted" to BBSD.

One ``.npz`` file (no pickles), built where the embeddings and probabilities are computed anyway
(when a model is registered) and shipped beside the model, so a served version and its
reference never disagree: the probabilities, embeddings and image facts of each photo, the class
names, and which model produced them.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from petsml.errors import PetsError
from petsml.io import atomic_path
from petsml.monitoring.record import ImageFacts, ModelRef
from petsml.monitoring.window import Sample

_ARRAYS = ("probabilities", "embeddings", "width", "height", "format", "greyscale")


class ReferenceError(PetsError):
    """The reference file is missing, unreadable, or does not match the monitored model."""


@dataclass(frozen=True)
class Reference:
    sample: Sample
    model: ModelRef
    built_at: float  # UTC seconds

    def __len__(self) -> int:
        return len(self.sample)

    def save(self, path: str | Path) -> None:
        """Write the ``.npz`` atomically."""
        arrays = {name: getattr(self.sample, name) for name in _ARRAYS}
        arrays["format"] = arrays["format"].astype(str)
        meta = np.array(
            [self.model.name, self.model.version, self.model.alias, repr(self.built_at)]
        )
        with atomic_path(path, suffix=".npz") as tmp, open(tmp, "wb") as handle:
            np.savez(handle, class_names=np.array(self.sample.class_names, dtype=str), meta=meta,
                     **arrays)  # fmt: skip

    @classmethod
    def load(cls, path: str | Path) -> Reference:
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {name: data[name] for name in (*_ARRAYS, "class_names", "meta")}
        except (OSError, ValueError, KeyError) as error:
            raise ReferenceError(
                f"{path}: not a monitoring reference ({error}); rebuild it with "
                "petsml.monitoring.reference.build_reference"
            ) from None
        name, version, alias, built = (str(v) for v in arrays.pop("meta"))
        names = tuple(str(c) for c in arrays.pop("class_names"))
        return cls(
            Sample(class_names=names, **arrays), ModelRef(name, version, alias), float(built)
        )

    def check_matches(self, class_names: Sequence[str], where: str = "the window") -> None:
        """Refuse to compare outputs over different class lists (another model's reference)."""
        if tuple(class_names) and tuple(class_names) != self.sample.class_names:
            raise ReferenceError(
                f"the reference ({self.model.label()}, {len(self.sample.class_names)} classes) "
                f"and {where} ({len(class_names)} classes) disagree on the class list: build "
                "the reference from the monitored model's own validation outputs"
            )


def build_reference(
    probabilities: np.ndarray,
    embeddings: np.ndarray,
    facts: Sequence[ImageFacts],
    class_names: Sequence[str],
    model: ModelRef | None = None,
) -> Reference:
    """A reference from the model's outputs on its validation photos, row ``i`` being photo
    ``facts[i]``'s (:func:`petsml.monitoring.record.image_facts` of each file, with its decoded
    array, so greyscale is judged as at prediction time)."""
    probabilities = np.asarray(probabilities, dtype=np.float32)
    embeddings = np.asarray(embeddings, dtype=np.float32)
    n = len(facts)
    if probabilities.shape != (n, len(class_names)) or len(embeddings) != n:
        raise ReferenceError(
            f"reference arrays disagree: probabilities {probabilities.shape}, embeddings "
            f"{embeddings.shape}, {n} photos, {len(class_names)} classes"
        )
    if n < 2:
        raise ReferenceError(f"a reference needs at least 2 validation photos, got {n}")
    sample = Sample(
        class_names=tuple(str(c) for c in class_names),
        probabilities=probabilities,
        embeddings=embeddings,
        width=np.array([f.width for f in facts], np.int64),
        height=np.array([f.height for f in facts], np.int64),
        format=np.array([f.format for f in facts], dtype=str),
        greyscale=np.array([f.greyscale for f in facts], dtype=bool),
    )
    return Reference(sample, model or ModelRef(), time.time())


def classifier_outputs(model, images_u8: np.ndarray, batch_size: int = 16):
    """(softmax probabilities, embeddings) of a :class:`~petsml.models.classifier.Classifier`
    on (N, S, S, 3) uint8 decoded photos: the served model's own forward, one pass for both."""
    import torch

    from petsml.data.tensors import to_input

    prep = model.backbone.preprocessing
    device = next(model.parameters()).device
    model = model.eval()
    probs, vectors = [], []
    with torch.inference_mode():
        for start in range(0, len(images_u8), batch_size):
            batch = torch.from_numpy(np.array(images_u8[start : start + batch_size]))  # a copy
            x = to_input(batch.to(device), list(prep.mean), list(prep.std),
                         size=int(prep.input_size))  # fmt: skip
            logits, embedded = model.forward_with_embedding(x.float())
            probs.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
            vectors.append(embedded.float().cpu().numpy())
    if not probs:
        return np.zeros((0, model.num_classes), np.float32), np.zeros((0, 0), np.float32)
    return np.concatenate(probs), np.concatenate(vectors)
