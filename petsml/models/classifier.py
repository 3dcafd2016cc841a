"""Backbone + linear head: the one kind of model every strategy ships.

``model.pt`` holds ``{"spec": {...}, "state_dict": {...}}``; the spec says how to rebuild the
network offline (``create_backbone(..., pretrained=False)``) and carries the caller's metadata
(``strategy``, ``task``, ``class_names``, ``decode_size``, ...) at its top level.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from petsml.errors import PetsError
from petsml.io import atomic_path
from petsml.models.backbones import Backbone, create_backbone

Feature = Literal["penultimate", "early"]
FEATURES = ("penultimate", "early")
FORMAT_VERSION = 1


class ModelFileError(PetsError):
    """A saved model file is missing or unreadable."""


class Classifier(nn.Module):
    """``head(features(x))``: logits from normalised NCHW float at the backbone's input size."""

    def __init__(self, backbone: Backbone, num_classes: int, feature: Feature = "penultimate"):
        super().__init__()
        if feature not in FEATURES:
            raise ValueError(f"feature must be one of {FEATURES}, got {feature!r}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.backbone = backbone
        self.feature = feature
        self.num_classes = int(num_classes)
        dim = backbone.feature_dim if feature == "penultimate" else backbone.early_dim
        self.head = nn.Linear(dim, self.num_classes)

    @property
    def in_features(self) -> int:
        return self.head.in_features

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if self.feature == "penultimate":
            return self.backbone.forward_features(x)
        return self.backbone.forward_early(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

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


def load_classifier(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[Classifier, dict[str, Any]]:
    """Rebuild a saved :class:`Classifier` offline; returns ``(model in eval mode, spec)``."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: model file not found; run the training stage first.")
    try:
        blob = torch.load(path, map_location=map_location, weights_only=True)
        spec, state = blob["spec"], blob["state_dict"]
    except Exception as error:  # truncated or foreign file: torch raises many types
        raise ModelFileError(f"{path}: not a petsml model file ({error}); re-train.") from None
    backbone = create_backbone(
        spec.get("backbone_resolved", spec["backbone"]),
        pretrained=False,
        early_block=spec["early_block"],
        image_size=spec.get("image_size"),
    )
    backbone.name = spec["backbone"]
    model = Classifier(backbone, spec["num_classes"], spec["feature"])
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise ModelFileError(
            f"{path}: weights do not fit backbone {spec['backbone']!r} as installed now "
            f"({error}); re-run training or install the library versions it was trained with."
        ) from None
    model.to(map_location)
    return model.eval(), spec
