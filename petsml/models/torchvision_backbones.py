"""torchvision backbones: explicit stages + a pooling head (:class:`SequentialBackbone`).

:data:`_PARTS` is the one table of what this module knows: a torchvision model-name prefix ->
how to cut that family's network into stages and a head. Weights come from torchvision's cache
(``torch.hub.get_dir()/checkpoints``), downloading when a network is there (:mod:`.hub`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from http.client import HTTPException
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from petsml.models.base import (
    OFFLINE_HINT,
    Backbone,
    BackboneError,
    BackboneFamily,
    BackboneRequest,
    Preprocessing,
    SplitSteps,
    WeightsUnavailableError,
    pool,
    three_channels,
)
from petsml.models.hub import socket_timeout, unavailable, unreachable

log = logging.getLogger(__name__)


class SequentialBackbone(Backbone):
    """``stages`` run in order (spatial maps); ``head`` pools to the penultimate vector.

    ``blocks()`` = the stages, plus the head when it has parameters (VGG's MLP, ConvNeXt's norm,
    MobileNetV3's last linear layer). Any family whose network is a chain of stages can build
    one of these (see docs/ARCHITECTURE.md, "Adding a backbone family").
    """

    def __init__(
        self,
        stages: list[nn.Module],
        head: nn.Module,
        preprocessing: Preprocessing,
        request: BackboneRequest,
    ) -> None:
        super().__init__()
        self.stages = nn.ModuleList(stages)
        self.head = head
        self.preprocessing = preprocessing
        self._head_is_block = any(True for _ in head.parameters())
        self._set_common(request, len(self.stages) + int(self._head_is_block))
        self.feature_dim, self.early_dim = self._probe_dims()

    @property
    def _early_is_head(self) -> bool:
        return self.early_index >= len(self.stages)

    @torch.no_grad()
    def _probe_dims(self) -> tuple[int, int]:
        was_training = self.training
        self.eval()
        try:
            pen, early = self.forward_both(torch.zeros(1, 3, 64, 64))
        finally:
            self.train(was_training)
        return int(pen.shape[1]), int(early.shape[1])

    def blocks(self) -> list[nn.Module]:
        return [*self.stages, self.head] if self._head_is_block else list(self.stages)

    def split_steps(self) -> SplitSteps:
        """The stages in order, then the head (trained with the top blocks when it has weights)."""
        return SplitSteps(list(self.stages), self.head, self.head)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages:
            x = stage(x)
        return self.head(x)

    def forward_early(self, x: torch.Tensor) -> torch.Tensor:
        if self._early_is_head:
            return self.forward_features(x)
        for stage in self.stages[: self.early_index + 1]:
            x = stage(x)
        return pool(x)

    def forward_blocks(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        penultimate = self.head(x)
        if self._head_is_block:
            outs.append(penultimate)
        return outs, penultimate

    def forward_both(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        early = None
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i == self.early_index:
                early = pool(x)
        pen = self.head(x)
        return pen, (pen if early is None else early)


# --------------------------------------------------------------------------------------------
# Each family's cut into stages + head

Parts = tuple[list[nn.Module], nn.Module]


def _split_by_resolution(modules: list[nn.Module]) -> list[nn.Sequential]:
    """Group consecutive modules into levels; a module that shrinks the map starts a new one."""
    levels: list[list[nn.Module]] = []
    x = torch.zeros(1, 3, 64, 64)
    with torch.no_grad():
        for module in modules:
            was_training = module.training
            module.eval()
            y = module(x)
            module.train(was_training)
            if not levels or y.shape[-1] < x.shape[-1]:
                levels.append([])
            levels[-1].append(module)
            x = y
    return [nn.Sequential(*level) for level in levels]


def _resnet_parts(model: Any) -> Parts:
    stem = nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool)
    stages = [stem, model.layer1, model.layer2, model.layer3, model.layer4]
    return stages, nn.Sequential(model.avgpool, nn.Flatten(1))


def _vgg_parts(model: Any) -> Parts:
    stages, current = [], []
    for layer in model.features:
        current.append(layer)
        if isinstance(layer, nn.MaxPool2d):
            stages.append(nn.Sequential(*current))
            current = []
    if current:
        stages.append(nn.Sequential(*current))
    return stages, nn.Sequential(model.avgpool, nn.Flatten(1), *list(model.classifier)[:-1])


def _convnext_parts(model: Any) -> Parts:
    f = list(model.features)  # stem, stage, (downsample, stage) x 3
    stages = [nn.Sequential(f[i], f[i + 1]) for i in range(0, len(f), 2)]
    return stages, nn.Sequential(model.avgpool, *list(model.classifier)[:-1])


def _by_resolution(model: Any, head: nn.Module) -> Parts:
    """``model.features`` cut where the map shrinks.

    The final 1x1 conv is its own block when nothing with parameters follows it (as timm's
    conv_head); otherwise the head is the last block and the conv closes the last level.
    """
    features = list(model.features)
    if any(True for _ in head.parameters()):
        return _split_by_resolution(features), head
    return [*_split_by_resolution(features[:-1]), features[-1]], head


def _mobilenet_v3_parts(model: Any) -> Parts:
    c = model.classifier
    return _by_resolution(model, nn.Sequential(model.avgpool, nn.Flatten(1), c[0], c[1]))


def _efficientnet_parts(model: Any) -> Parts:
    return _by_resolution(model, nn.Sequential(model.avgpool, nn.Flatten(1)))


def _mobilenet_v2_parts(model: Any) -> Parts:
    return _by_resolution(model, nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1)))


# torchvision model-name prefix -> how to cut that family. A new torchvision family is one row.
_PARTS: dict[str, Callable[[Any], Parts]] = {
    "resnet": _resnet_parts,
    "resnext": _resnet_parts,
    "wide_resnet": _resnet_parts,
    "vgg": _vgg_parts,
    "mobilenet_v2": _mobilenet_v2_parts,
    "mobilenet_v3_": _mobilenet_v3_parts,
    "efficientnet_": _efficientnet_parts,
    "convnext_": _convnext_parts,
}
TORCHVISION_FAMILIES = tuple(_PARTS)


def _torchvision_parts(model_name: str, model: nn.Module) -> Parts:
    for prefix, parts in _PARTS.items():
        if model_name.startswith(prefix):
            return parts(model)
    raise BackboneError(f"torchvision model {type(model).__name__} is not supported")


# --------------------------------------------------------------------------------------------
# Weights, names and the family row


def _torchvision_url(weights: Any) -> str:
    return weights.url


def _torchvision_state_dict(name: str, model_name: str) -> dict[str, torch.Tensor]:
    from torchvision.models import get_model_weights

    weights = get_model_weights(model_name).DEFAULT
    url = _torchvision_url(weights)
    cache_dir = Path(torch.hub.get_dir()) / "checkpoints"
    cached = cache_dir / os.path.basename(urlparse(url).path)
    where = f"{cached} (torchvision's cache: torch.hub.get_dir()/checkpoints; TORCH_HOME moves it)"
    if not cached.exists():
        reason = unreachable(url)
        if reason:
            raise unavailable(name, reason, where)
        log.info("downloading %s weights from %s", model_name, url)
    try:
        with socket_timeout():
            return torch.hub.load_state_dict_from_url(
                url,
                model_dir=str(cache_dir),
                map_location="cpu",
                progress=False,
                check_hash=True,
                weights_only=True,
            )
    except (OSError, HTTPException) as error:
        raise unavailable(name, f"{type(error).__name__}: {error}", where) from error
    except Exception as error:  # hash mismatch, truncated or corrupt file
        raise WeightsUnavailableError(
            f"pretrained weights for backbone {name!r}: cannot load {cached} "
            f"({type(error).__name__}: {error}); delete it to download it again, or {OFFLINE_HINT}."
        ) from error


def torchvision_names() -> list[str]:
    """The torchvision models whose family this module knows how to cut, sorted."""
    from torchvision.models import list_models

    return sorted(n for n in list_models() if n.startswith(TORCHVISION_FAMILIES))


def build_torchvision(request: BackboneRequest) -> SequentialBackbone:
    """A torchvision model, its weights' preprocessing, cut into stages and a head."""
    from torchvision.models import get_model, get_model_weights

    model_name = request.model_name
    transforms = get_model_weights(model_name).DEFAULT.transforms()
    size = request.image_size or int(transforms.crop_size[0])
    mean, std = three_channels(transforms.mean), three_channels(transforms.std)
    state = _torchvision_state_dict(request.name, model_name) if request.pretrained else None
    model = get_model(model_name, weights=None)
    if state is not None:
        model.load_state_dict(state)
    stages, head = _torchvision_parts(model_name, model)
    return SequentialBackbone(stages, head, Preprocessing(size, mean, std), request)


def _not_supported(name: str, model_name: str) -> BackboneError:
    return BackboneError(
        f"model.backbone {name!r}: torchvision model {model_name!r} is not supported "
        f"(families: {', '.join(TORCHVISION_FAMILIES)}); try timm:{model_name}."
    )


FAMILY = BackboneFamily(
    library="tv",
    label="torchvision",
    names=torchvision_names,
    build=build_torchvision,
    prefixes=("tv", "torchvision"),
    not_found=_not_supported,
)
