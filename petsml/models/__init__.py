"""Backbones (one factory, :func:`create_backbone`) and the shipped :class:`Classifier`.

Nothing here imports MLflow, Prefect, DVC or Great Expectations.
"""

from petsml.models.backbones import (
    Backbone,
    BackboneError,
    BackboneFamily,
    Preprocessing,
    WeightsMismatchError,
    WeightsUnavailableError,
    available_backbones,
    create_backbone,
    register_family,
    resolve_backbone,
)
from petsml.models.classifier import Classifier, ModelFileError, load_classifier, save_classifier
from petsml.models.offline_weights import OFFLINE_BACKBONES

__all__ = [
    "OFFLINE_BACKBONES",
    "Backbone",
    "BackboneError",
    "BackboneFamily",
    "Classifier",
    "ModelFileError",
    "Preprocessing",
    "WeightsMismatchError",
    "WeightsUnavailableError",
    "available_backbones",
    "create_backbone",
    "load_classifier",
    "register_family",
    "resolve_backbone",
    "save_classifier",
]
