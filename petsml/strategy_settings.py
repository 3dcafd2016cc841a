"""The params.yaml sections of the built-in strategies, typed (their rows in
:mod:`petsml.catalog.strategies` name these models; the values live in params.yaml)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from petsml.config_section import Section


class LinearParams(Section):
    C: list[float] = Field(min_length=1)


class FinetuneTopParams(Section):
    unfreeze_blocks: int = Field(ge=1)
    lr: float = Field(gt=0)
    backbone_lr_scale: float = Field(gt=0)
    weight_decay: float = Field(ge=0)
    cache_flip: Literal["map", "image", "none"]
    head_init: Literal["probe", "random"]
    probe_C: list[float] = Field(min_length=1)


class FinetuneFullParams(Section):
    lr: float = Field(gt=0)
    layer_decay: float = Field(gt=0, le=1)
    weight_decay: float = Field(ge=0)
    head_init: Literal["probe", "random"]
    probe_C: list[float] = Field(min_length=1)


class ScratchParams(Section):
    lr: float = Field(gt=0)
    weight_decay: float = Field(ge=0)
