"""Test-set logits of a saved :class:`~petsml.models.classifier.Classifier`, as serving gets them.

The reported metrics must describe the model that ships, so every strategy's logits come from
the saved ``model.pt`` run in float32 on centre crops of the decoded images: the path the served
pyfunc takes (``load_rgb`` at the decode size, ``to_input``, the network; the decoded cache holds
exactly ``load_rgb``'s output). The featurize stage's cached features are not used for metrics:
they may come from bf16 autocast (``model.precision: auto`` on a CPU with native bf16), and on
real photos that moved test predictions away from what the shipped model says.

* :func:`model_logits` runs one classifier;
* :func:`shared_trunk_logits` runs several classifiers that share one backbone (the frozen-feature
  strategies, whose backbones are the same pretrained weights) with one pass of it, each head on
  the feature it uses - half the cost of two passes for the default CPU strategies (a pass per
  test-time view when a model averages several: ``tta: flip`` in its spec);
* :func:`feature_logits` (the cached features through a head) remains as a diagnostic: how far
  the features the head was fitted on are from what the shipped model computes.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from petsml.data.decode import DecodedImages
from petsml.data.feature_file import FeatureFileError, read_features, rows_for
from petsml.data.prefetch import input_batches
from petsml.errors import PetsError
from petsml.models.classifier import VIEWS, mean_over_views

log = logging.getLogger(__name__)


class EvaluationError(PetsError):
    """A model, feature file or split does not fit what evaluation needs."""


def load_feature_split(features_dir: str | Path, split: str = "test") -> dict[str, np.ndarray]:
    return read_features(features_dir, split)


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
    try:
        rows = rows_for(features, image_ids, source)
    except FeatureFileError as error:  # evaluation's callers handle their own error type
        raise EvaluationError(str(error)) from None
    x = np.asarray(features[kind], dtype=np.float64)[rows]
    weight, bias = head_weights(model)
    if x.shape[1] != weight.shape[1]:
        raise EvaluationError(
            f"{source}: {kind} features have {x.shape[1]} dimensions but the model's head "
            f"expects {weight.shape[1]}; features and model come from different backbones. "
            "Re-run `dvc repro featurize` and the train stage."
        )
    return (x @ weight.T + bias).astype(np.float32)


def _inputs(
    backbone: torch.nn.Module,
    images: DecodedImages,
    image_ids: list[str],
    batch_size: int,
    device: torch.device,
    desc: str,
) -> Iterator[torch.Tensor]:
    """Normalised float32 centre crops of ``image_ids`` by batch, as serving makes them."""
    prep = backbone.preprocessing
    size = int(prep.input_size)
    if size > images.size:
        raise EvaluationError(
            f"the model expects {size}x{size} inputs but data/decoded holds {images.size}x"
            f"{images.size} images: raise decode.size in params.yaml (or lower model.image_size "
            "and retrain)."
        )
    yield from input_batches(images, image_ids, batch_size, device, prep, desc)


def _stack(out: list[np.ndarray], n_classes: int) -> np.ndarray:
    return np.concatenate(out) if out else np.empty((0, n_classes), dtype=np.float32)


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
    out = [
        model(x).float().cpu().numpy()
        for x in _inputs(model.backbone, images, image_ids, batch_size, device, desc)
    ]
    return _stack(out, model.head.out_features)


def trunk_fingerprint(model: torch.nn.Module) -> str:
    """Equal for classifiers whose backbones compute the same features (same class, weights,
    input size, normalisation and early block), so one pass can serve them all."""
    backbone = model.backbone
    prep = backbone.preprocessing
    digest = hashlib.sha256()
    about = (type(backbone).__name__, int(prep.input_size), tuple(prep.mean), tuple(prep.std))
    digest.update(repr((*about, int(backbone.early_block))).encode())
    for key, tensor in sorted(backbone.state_dict().items()):
        digest.update(key.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


@torch.inference_mode()
def shared_trunk_logits(
    models: Sequence[torch.nn.Module],
    images: DecodedImages,
    image_ids: list[str],
    batch_size: int = 64,
    device: torch.device | None = None,
    desc: str = "evaluate",
) -> list[np.ndarray]:
    """Logits of classifiers with one :func:`trunk_fingerprint`, from one float32 pass per view.

    Each model's head reads the feature it was built on (penultimate or early block) from
    ``backbone.forward_both``, the same layers its own ``forward`` would run, and averages its
    logits over its own test-time views (``Classifier.views``, eval mode): the trunk runs once
    per view any of the models uses (twice when one has ``tta: flip``), so every model's logits
    equal its own ``forward``'s.
    """
    if len({trunk_fingerprint(m) for m in models}) > 1:
        raise ValueError("shared_trunk_logits needs classifiers with identical backbones")
    device = device or torch.device("cpu")
    backbone = models[0].backbone.eval().to(device, memory_format=torch.channels_last)
    for model in models:
        model.head.eval().to(device)
    wanted = [model.eval().views() for model in models]
    views = list(dict.fromkeys(name for names in wanted for name in names))  # ordered union
    out: list[list[np.ndarray]] = [[] for _ in models]
    for x in _inputs(backbone, images, image_ids, batch_size, device, desc):
        features = {name: backbone.forward_both(VIEWS[name](x)) for name in views}
        for logits, model, names in zip(out, models, wanted, strict=True):
            mean = mean_over_views(names, lambda name: model.head_on(*features[name]))  # noqa: B023
            logits.append(mean.float().cpu().numpy())
    return [_stack(o, m.head.out_features) for o, m in zip(out, models, strict=True)]
