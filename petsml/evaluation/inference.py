"""Test-set logits of a trained :class:`~petsml.models.classifier.Classifier`.

Two routes give the same numbers:

* :func:`feature_logits` - for the frozen-feature strategies the trunk is the frozen backbone
  whose pooled outputs the featurize stage already cached, so the logits are just
  ``features @ W.T + b`` through the classifier's linear head (seconds, no network pass);
* :func:`model_logits` - every other strategy runs the whole network on centre crops of the
  decoded test images.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from petsml.data.decode import DecodedImages
from petsml.data.prefetch import decoded_batches
from petsml.data.tensors import to_input
from petsml.errors import PetsError

log = logging.getLogger(__name__)


class EvaluationError(PetsError):
    """A model, feature file or split does not fit what evaluation needs."""


def load_feature_split(features_dir: str | Path, split: str = "test") -> dict[str, np.ndarray]:
    path = Path(features_dir) / f"{split}.npz"
    if not path.exists():
        raise EvaluationError(f"{path}: cached features missing. Run `dvc repro featurize` first.")
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def head_weights(model: torch.nn.Module) -> tuple[np.ndarray, np.ndarray]:
    """(W, b) of the classifier's linear head as float64 arrays: W is (classes, features)."""
    head = model.head
    weight = head.weight.detach().cpu().double().numpy()
    if head.bias is None:
        bias = np.zeros(weight.shape[0])
    else:
        bias = head.bias.detach().cpu().double().numpy()
    return weight, bias


def feature_logits(
    model: torch.nn.Module,
    features: dict[str, np.ndarray],
    image_ids: list[str],
    source: str = "features",
) -> np.ndarray:
    """Logits of ``image_ids`` (in that order) from cached features through ``model.head``."""
    kind = str(model.feature)
    if kind not in features:
        raise EvaluationError(f"{source} holds no {kind!r} features; re-run `dvc repro featurize`.")
    row = {image_id: i for i, image_id in enumerate(features["image_id"].tolist())}
    missing = [i for i in image_ids if i not in row]
    if missing:
        raise EvaluationError(
            f"{source} lacks {len(missing)} test image(s) (e.g. {missing[0]}); the features are "
            "older than data/splits. Re-run `dvc repro featurize`."
        )
    x = np.asarray(features[kind], dtype=np.float64)[[row[i] for i in image_ids]]
    weight, bias = head_weights(model)
    if x.shape[1] != weight.shape[1]:
        raise EvaluationError(
            f"{source}: {kind} features have {x.shape[1]} dimensions but the model's head "
            f"expects {weight.shape[1]}; features and model come from different backbones. "
            "Re-run `dvc repro featurize` and the train stage."
        )
    return (x @ weight.T + bias).astype(np.float32)


@torch.inference_mode()
def model_logits(
    model: torch.nn.Module,
    images: DecodedImages,
    image_ids: list[str],
    batch_size: int = 64,
    device: torch.device | None = None,
    desc: str = "evaluate",
) -> np.ndarray:
    """Run the whole classifier on centre crops of the decoded images (float32, eval mode)."""
    device = device or torch.device("cpu")
    model = model.eval().to(device, memory_format=torch.channels_last)
    prep = model.backbone.preprocessing
    size = int(prep.input_size)
    if size > images.size:
        raise EvaluationError(
            f"the model expects {size}x{size} inputs but data/decoded holds {images.size}x"
            f"{images.size} images: raise decode.size in params.yaml (or lower model.image_size "
            "and retrain)."
        )
    out = []
    steps = math.ceil(len(image_ids) / batch_size)
    stream = decoded_batches(images, image_ids, batch_size, device)
    bar = tqdm(stream, total=steps, desc=desc, unit="batch", mininterval=2, disable=steps < 5)
    for batch in bar:
        x = to_input(batch, prep.mean, prep.std, size=size, channels_last=True)
        out.append(model(x).float().cpu().numpy())
    if not out:
        return np.empty((0, model.head.out_features), dtype=np.float32)
    return np.concatenate(out)
