"""What a trained strategy trains, and at which learning rate.

The strategy's row in :mod:`petsml.training.strategies` says whether the weights start
pretrained and names its block-rate rule: a function ``(settings, n_blocks, backbone) ->
{block index: lr}`` (the functions below). Blocks it leaves out are frozen. The head always
trains at the strategy's ``lr``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from petsml.config import Params
from petsml.models.backbones import create_backbone
from petsml.models.classifier import Classifier
from petsml.models.early_block import unread_block
from petsml.training.loop import TrainingError
from petsml.training.spec import Strategy

# --------------------------------------------------------------------------------------------
# Block-rate rules (one per trained strategy; a row of the registry names its rule)


def top_blocks(settings: Any, n: int, backbone: str) -> dict[int, float]:
    """The last ``unfreeze_blocks`` blocks at ``lr * backbone_lr_scale``; the rest frozen."""
    k = settings.unfreeze_blocks
    if k > n:
        raise TrainingError(
            f"finetune_top.unfreeze_blocks={k} but backbone {backbone!r} has "
            f"only {n} blocks; lower it in params.yaml."
        )
    return {i: settings.lr * settings.backbone_lr_scale for i in range(n - k, n)}


def layer_decay(settings: Any, n: int, backbone: str) -> dict[int, float]:
    """Every block; the one ``d`` steps below the head at ``lr * layer_decay ** d``."""
    return {i: settings.lr * settings.layer_decay ** (n - i) for i in range(n)}


def every_block(settings: Any, n: int, backbone: str) -> dict[int, float]:
    """Every block at ``lr`` (training from scratch)."""
    return dict.fromkeys(range(n), settings.lr)


# --------------------------------------------------------------------------------------------
# Model and parameter groups


def trained_strategy(strategy: str | Strategy) -> Strategy:
    """The registry row of a trained (image-consuming) strategy; a clear error otherwise."""
    # Imported here: the registry imports the fine-tune recipe, which imports this module.
    from petsml.training import strategies

    return strategies.trained(strategy)


def build_model(strategy: str | Strategy, params: Params, num_classes: int) -> Classifier:
    """The strategy's :class:`Classifier`, initialised deterministically from ``train.seed``."""
    row = trained_strategy(strategy)
    torch.manual_seed(params.train.seed)
    backbone = create_backbone(
        params.model.backbone,
        pretrained=params.model.pretrained and row.pretrained,
        early_block=unread_block(params),
        image_size=params.model.image_size,
    )
    return Classifier(backbone, num_classes, feature="penultimate")


@dataclass
class Groups:
    """AdamW parameter groups (head first) and the trunk blocks that stay frozen."""

    param_groups: list[dict[str, Any]]
    frozen_blocks: list[nn.Module]


def build_param_groups(strategy: str | Strategy, model: Classifier, params: Params) -> Groups:
    """Freeze what the strategy freezes and give every trainable block its learning rate.

    One group per block (named ``block<i>``, ``i`` counted from the stem) plus ``head``, so the
    per-layer rates are visible in the optimizer and in checkpoints. Also sets
    ``requires_grad`` on every parameter.
    """
    row = trained_strategy(strategy)
    settings = row.settings(params)
    blocks = list(model.backbone.blocks())
    n = len(blocks)
    for p in model.parameters():
        p.requires_grad_(True)
    block_lrs = row.block_lrs(settings, n, params.model.backbone)
    frozen = [block for i, block in enumerate(blocks) if i not in block_lrs]
    for block in frozen:
        for p in block.parameters():
            p.requires_grad_(False)

    groups = [{"name": "head", "params": list(model.head.parameters()), "lr": settings.lr}]
    for i in sorted(block_lrs, reverse=True):  # top block first, after the head
        block_params = [p for p in blocks[i].parameters() if p.requires_grad]
        if block_params:
            groups.append({"name": f"block{i}", "params": block_params, "lr": block_lrs[i]})
    for group in groups:
        group["weight_decay"] = settings.weight_decay
    _check_every_parameter_once(groups, model, params.model.backbone)
    return Groups(groups, frozen)


def _check_every_parameter_once(
    groups: list[dict[str, Any]], model: Classifier, backbone: str
) -> None:
    """Every trainable parameter must be in exactly one group, or it would silently not train."""
    seen: dict[int, str] = {}
    for group in groups:
        for p in group["params"]:
            if id(p) in seen:
                raise TrainingError(f"a parameter is in both {seen[id(p)]} and {group['name']}")
            seen[id(p)] = group["name"]
    orphans = [
        name for name, p in model.named_parameters() if p.requires_grad and id(p) not in seen
    ]
    if orphans:
        raise TrainingError(
            f"backbone {backbone!r}: parameters outside every block "
            f"(e.g. {orphans[0]}); Backbone.blocks() must own the whole trunk."
        )
