"""Backbones (one factory, :func:`create_backbone`), the linear heads and the shipped
:class:`Classifier`.

Names are imported on first use (PEP 562), so ``import petsml.models.heads`` - numpy and
scikit-learn only - does not pay for torch. Nothing here imports MLflow, Prefect, DVC or Great
Expectations.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "Backbone": "backbones",
    "BackboneError": "backbones",
    "BackboneFamily": "backbones",
    "Preprocessing": "backbones",
    "WeightsMismatchError": "backbones",
    "WeightsUnavailableError": "backbones",
    "available_backbones": "backbones",
    "create_backbone": "backbones",
    "resolve_backbone": "backbones",
    "Classifier": "classifier",
    "ModelFileError": "classifier",
    "load_classifier": "classifier",
    "save_classifier": "classifier",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'petsml.models' has no attribute {name!r}")
    return getattr(importlib.import_module(f"petsml.models.{home}"), name)
