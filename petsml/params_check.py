"""The whole of ``params.yaml`` checked at once, before anything runs.

:func:`petsml.config.load_params` validates the schema every time a stage starts, but only a
stage that re-runs loads it, so a misspelt key (``train.epoch``) in an otherwise unchanged
pipeline went unnoticed. :func:`check_params_file` is what the first DVC stage (``params``)
and the Prefect flows call up front. It adds the checks too slow for every stage start: the
backbone name must resolve (offline registry, torchvision or timm), which imports torch.
"""

from __future__ import annotations

from pathlib import Path

from petsml.config import DEFAULT_PARAMS, ConfigError, Params, load_params


def check_params_file(path: str | Path = DEFAULT_PARAMS) -> Params:
    """Load ``path`` strictly and resolve ``model.backbone``; :class:`ConfigError` names the key."""
    path = Path(path)
    params = load_params(path)
    _check_backbone(params.model.backbone, path)
    return params


def _check_backbone(name: str, path: Path) -> None:
    # Imported here: the backbone registry pulls in torch (seconds), which the schema check
    # and importing this module do not need.
    from petsml.models.backbones import BackboneError, resolve_backbone

    try:
        resolve_backbone(name)
    except BackboneError as error:
        problem = str(error).removeprefix("model.backbone ")
        raise ConfigError(
            f"{path}: invalid configuration\n  model.backbone: {problem}\n"
            f"Fix model.backbone in {path}."
        ) from None
