"""Backbone + linear head: the one kind of model every strategy ships.

``model.pt`` holds ``{"spec": {...}, "state_dict": {...}}``; the spec says how to rebuild the
network offline (``create_backbone(..., pretrained=False)``) and carries the caller's metadata
(``strategy``, ``task``, ``class_names``, ``decode_size``, ...) at its top level.

Test-time augmentation is a property of the shipped model, not of whoever runs it: the spec's
``tta`` (:data:`TTA`) names the views whose logits an eval-mode forward averages, so evaluation,
the served pyfunc, the web page and the ONNX export all answer alike from the one file. A model
in train mode never augments: training and its validation passes see plain ``head(features(x))``.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from petsml.catalog import tta as tta_catalog
from petsml.errors import PetsError
from petsml.io import atomic_path
from petsml.models.backbones import Backbone, create_backbone

Feature = Literal["penultimate", "early"]
FEATURES = ("penultimate", "early")
FORMAT_VERSION = 2  # 2: the spec's ``tta`` (a version-1 file has none: it loads as "none")

# Test-time views: name -> the transform of a normalised NCHW batch.
VIEWS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "identity": lambda x: x,
    "hflip": lambda x: torch.flip(x, dims=[3]),  # mirror the width axis of NCHW
}
# Test-time augmentation (params.yaml ``train.tta``): the registry's modes -> the views whose
# logits an eval-mode forward averages. The mean of the logits, so for the linear head it
# equals the head of the mean pooled feature and every consumer still applies one softmax.
TTA = tta_catalog.TTA


def mean_over_views(
    views: tuple[str, ...] | list[str], logits_of: Callable[[str], torch.Tensor]
) -> torch.Tensor:
    """Mean of ``logits_of(view)`` over ``views``: what every TTA consumer averages, one way.

    A single view (training, ``tta: none``) returns its logits untouched: exactly the plain graph.
    """
    total = logits_of(views[0])
    for name in views[1:]:
        total = total + logits_of(name)
    return total if len(views) == 1 else total / len(views)


class ModelFileError(PetsError):
    """A saved model file is missing or unreadable."""


class Classifier(nn.Module):
    """``head(features(x))``: logits from normalised NCHW float at the backbone's input size."""

    def __init__(
        self,
        backbone: Backbone,
        num_classes: int,
        feature: Feature = "penultimate",
        tta: str = "none",
    ):
        super().__init__()
        if feature not in FEATURES:
            raise ValueError(f"feature must be one of {FEATURES}, got {feature!r}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.backbone = backbone
        self.feature = feature
        self.num_classes = int(num_classes)
        self.tta = tta
        dim = backbone.feature_dim if feature == "penultimate" else backbone.early_dim
        self.head = nn.Linear(dim, self.num_classes)

    @property
    def tta(self) -> str:
        """Test-time augmentation of the eval-mode forward: a key of :data:`TTA`."""
        return self._tta

    @tta.setter
    def tta(self, mode: str) -> None:
        if mode not in TTA:
            raise ValueError(f"tta must be one of {tuple(TTA)}, got {mode!r}")
        self._tta = mode

    def views(self) -> tuple[str, ...]:
        """Names of the views (:data:`VIEWS`) :meth:`forward` averages now: one in train mode."""
        return TTA["none"] if self.training else TTA[self.tta]

    @property
    def in_features(self) -> int:
        return self.head.in_features

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if self.feature == "penultimate":
            return self.backbone.forward_features(x)
        return self.backbone.forward_early(x)

    def head_on(self, penultimate: torch.Tensor, early: torch.Tensor | None) -> torch.Tensor:
        """The head on the feature this classifier uses, from ``backbone.forward_both``'s pair."""
        return self.head(penultimate if self.feature == "penultimate" else early)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return mean_over_views(self.views(), lambda name: self.head(self.features(VIEWS[name](x))))

    def forward_with_embedding(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(``forward(x)``, pooled penultimate feature of ``x`` itself) from the same passes.

        The embedding is the unaugmented view's, as :mod:`petsml.similar` indexes photos, so a
        query and the indexed photos stay comparable whatever the TTA.
        """
        embedding: torch.Tensor | None = None

        def logits_of(name: str) -> torch.Tensor:
            nonlocal embedding
            view = VIEWS[name](x)
            if self.feature == "penultimate":
                penultimate, early = self.backbone.forward_features(view), None
            else:
                penultimate, early = self.backbone.forward_both(view)
            if name == "identity":
                embedding = penultimate
            return self.head_on(penultimate, early)

        logits = mean_over_views(self.views(), logits_of)
        assert embedding is not None  # every TTA mode has "identity"
        return logits, embedding

    def for_inference(self) -> Classifier:
        """An eval-mode copy whose backbone is fused (:meth:`Backbone.fuse_`): the form every
        pass that serves or evaluates a model runs. This classifier stays trainable."""
        clone = copy.deepcopy(self).eval()
        clone.backbone.fuse_()
        return clone

    @classmethod
    def from_linear(
        cls, backbone: Backbone, W: np.ndarray, b: np.ndarray, feature: Feature = "penultimate"
    ) -> Classifier:
        """A classifier whose head is the linear map ``logits = f @ W.T + b`` (e.g. sklearn's)."""
        W = np.asarray(W)
        b = np.asarray(b)
        if W.ndim != 2 or b.shape != (W.shape[0],):
            raise ValueError(f"W must be (n_classes, d), b (n_classes,); got {W.shape} {b.shape}")
        model = cls(backbone, W.shape[0], feature)
        if W.shape[1] != model.in_features:
            raise ValueError(
                f"W has {W.shape[1]} columns but {backbone.name}'s {feature} features have "
                f"{model.in_features} dimensions"
            )
        with torch.no_grad():
            model.head.weight.copy_(torch.as_tensor(W, dtype=model.head.weight.dtype))
            model.head.bias.copy_(torch.as_tensor(b, dtype=model.head.bias.dtype))
        return model

    def spec(self) -> dict[str, Any]:
        """What :func:`load_classifier` needs to rebuild this network without a network."""
        bb = self.backbone
        return {
            "format_version": FORMAT_VERSION,
            "backbone": bb.name,
            "backbone_resolved": bb.resolved_name,
            "pretrained": False,  # the weights are in the state dict
            "pretrained_init": bool(bb.pretrained),
            "early_block": int(bb.early_block),
            "image_size": bb.image_size,
            "input_size": int(bb.preprocessing.input_size),
            "mean": list(bb.preprocessing.mean),
            "std": list(bb.preprocessing.std),
            "feature": self.feature,
            "num_classes": self.num_classes,
            "tta": self.tta,
        }


def _plain(value: Any, where: str) -> Any:
    """JSON-shaped copy (so the file loads with ``weights_only=True``), or a clear TypeError."""
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as error:
        raise TypeError(f"{where} must be JSON-serialisable: {error}") from None


def save_classifier(
    model: Classifier, path: str | Path, meta: dict[str, Any] | None = None
) -> None:
    """Write ``{"spec", "state_dict"}`` to ``path`` atomically (temp file, then rename)."""
    if model.backbone.is_fused:
        raise ValueError("a fused (inference-only) classifier cannot be saved: save the original")
    meta = _plain(dict(meta or {}), "meta")
    core = model.spec()
    clash = [k for k in core if k in meta and meta[k] != core[k]]
    if clash:
        raise ValueError(
            f"meta contradicts the model on {clash}: "
            + ", ".join(f"{k}={meta[k]!r} vs {core[k]!r}" for k in clash)
        )
    spec = {**meta, **core}
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save({"spec": spec, "state_dict": state}, tmp)


def read_spec(path: str | Path) -> dict[str, Any]:
    """A saved model's spec alone (what it is, its metadata), without building the network."""
    path = Path(path)
    try:
        return dict(torch.load(path, map_location="cpu", weights_only=True)["spec"])
    except FileNotFoundError:
        raise ModelFileError(f"{path}: model file not found; run the training stage.") from None
    except Exception as error:  # truncated or foreign file: torch raises many types
        raise ModelFileError(f"{path}: not a petsml model file ({error}); re-train.") from None


def load_classifier(
    path: str | Path, map_location: str | torch.device = "cpu", *, fused: bool = True
) -> tuple[Classifier, dict[str, Any]]:
    """Rebuild a saved :class:`Classifier` offline; returns ``(model in eval mode, spec)``.

    ``fused``: the inference form (:meth:`Classifier.for_inference`), as everything that serves
    or evaluates a model runs it; False keeps the file's own layers (to inspect or train them).
    A file without ``tta`` (format 1) loads as ``"none"``; the returned spec always names it.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: model file not found; run the training stage first.")
    try:
        blob = torch.load(path, map_location=map_location, weights_only=True)
        spec, state = blob["spec"], blob["state_dict"]
    except Exception as error:  # truncated or foreign file: torch raises many types
        raise ModelFileError(f"{path}: not a petsml model file ({error}); re-train.") from None
    version = spec.get("format_version", 1)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path}: model file format {version!r} is newer than this petsml reads "
            f"({FORMAT_VERSION}); update the project or re-train with this one."
        )
    tta = spec.get("tta", "none")  # version 1 files predate TTA
    if tta not in TTA:
        raise ModelFileError(
            f"{path}: spec tta {tta!r} is not one of {tuple(TTA)}; re-train with a known "
            "train.tta in params.yaml."
        )
    backbone = create_backbone(
        spec.get("backbone_resolved", spec["backbone"]),
        pretrained=False,
        early_block=spec["early_block"],
        image_size=spec.get("image_size"),
    )
    backbone.name = spec["backbone"]
    model = Classifier(backbone, spec["num_classes"], spec["feature"], tta=tta)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise ModelFileError(
            f"{path}: weights do not fit backbone {spec['backbone']!r} as installed now "
            f"({error}); re-run training or install the library versions it was trained with."
        ) from None
    model.to(map_location).eval()
    if fused:
        model.backbone.fuse_()
    return model, {**spec, "tta": tta}
