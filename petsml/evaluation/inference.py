"""Test-set logits of a saved :class:`~petsml.models.classifier.Classifier`, as serving gets them.

The reported metrics must describe the model that ships. Every saved model runs in its
inference form (:meth:`~petsml.models.classifier.Classifier.for_inference`, the form the served
pyfunc loads) in float32 on centre crops of the decoded images - ``load_rgb`` at the decode
size, ``to_input``, the network; the decoded cache holds exactly ``load_rgb``'s output.

* :func:`feature_logits`: a frozen strategy's saved head on the featurize stage's cached test
  features. That pass *is* the shipped network's (same fused backbone, float32 for the test
  split), so no test photo goes through the backbone a second time
  (``tests/test_one_pass.py`` checks the logits equal the model's own forward);
* :func:`model_pass`: a fine-tuned model's test logits and the embeddings of the photos its
  similar-photo index holds, from one pass over each photo;
* :func:`shared_trunk_logits` runs several classifiers that share one backbone with one pass of
  it (frozen strategies whose model averages test-time views, ``tta: flip``, which the cached
  features do not hold); :func:`model_logits` runs one classifier.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from petsml import paths
from petsml.data.decode import DecodedImages
from petsml.data.feature_file import FeatureFileError, SplitFeatures
from petsml.data.prefetch import input_batches
from petsml.errors import PetsError
from petsml.models.classifier import VIEWS, mean_over_views

log = logging.getLogger(__name__)


class EvaluationError(PetsError):
    """A model, feature file or split does not fit what evaluation needs."""


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
    features: SplitFeatures,
    image_ids: list[str],
    source: str = "features",
) -> np.ndarray:
    """Logits of ``image_ids`` (in that order): cached features through ``model.head``, the
    feature the model reads (``early``: its backbone's early block)."""
    try:
        rows = features.rows(image_ids, source)
        if model.feature == "penultimate":
            x = features.penultimate
        else:
            x = features.block(int(model.backbone.early_index))
    except FeatureFileError as error:  # evaluation's callers handle their own error type
        raise EvaluationError(str(error)) from None
    x = np.asarray(x, dtype=np.float32)[rows]
    head = model.head
    if x.shape[1] != head.in_features:
        raise EvaluationError(
            f"{source}: {model.feature} features have {x.shape[1]} dimensions but the model's "
            f"head expects {head.in_features}; features and model come from different "
            "backbones. Re-run `dvc repro featurize` and the train stage."
        )
    with torch.inference_mode():
        return head.float()(torch.from_numpy(x)).numpy()


def _inputs(
    backbone: torch.nn.Module,
    images: DecodedImages,
    image_ids: list[str],
    batch_size: int,
    device: torch.device,
    network: str,
    split: str = "test",
) -> Iterator[torch.Tensor]:
    """Normalised float32 centre crops of ``image_ids`` by batch, as serving makes them
    (recorded as a pass of ``network`` over ``split``)."""
    prep = backbone.preprocessing
    size = int(prep.input_size)
    if size > images.size:
        raise EvaluationError(
            f"the model expects {size}x{size} inputs but {paths.DECODED} holds {images.size}x"
            f"{images.size} images: raise decode.size in params.yaml (or lower model.image_size "
            "and retrain)."
        )
    yield from input_batches(images, image_ids, batch_size, device, prep, split, network)


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


@torch.inference_mode()
def model_pass(
    model: torch.nn.Module,
    images: DecodedImages,
    test_ids: list[str],
    index_ids: list[str],
    batch_size: int = 64,
    device: torch.device | None = None,
    desc: str = "evaluate",
) -> tuple[np.ndarray, np.ndarray]:
    """(test logits, embeddings of ``index_ids``): each photo through the model once - the test
    photos with every test-time view the model averages, the index photos unaugmented (the
    embedding is the identity view's, as a query's is)."""
    device = device or torch.device("cpu")
    model = model.eval().to(device, memory_format=torch.channels_last)
    logits = [
        model(x).float().cpu().numpy()
        for x in _inputs(model.backbone, images, test_ids, batch_size, device, desc, "test")
    ]
    embeddings = [
        model.backbone.forward_features(x).float().cpu().numpy()
        for x in _inputs(model.backbone, images, index_ids, batch_size, device, desc, "index")
    ]
    dim = int(model.backbone.feature_dim)
    return (
        _stack(logits, model.head.out_features),
        np.concatenate(embeddings) if embeddings else np.empty((0, dim), np.float32),
    )


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
