"""The whole of ``params.yaml`` checked at once, before anything runs.

:func:`petsml.config.load_params` validates the schema every time a stage starts, but only a
stage that re-runs loads it, so a misspelt key (``train.epoch``) in an otherwise unchanged
pipeline went unnoticed. :func:`check_params_file` is what the first DVC stage (``params``)
and the Prefect flows call up front. It adds the checks no stage start needs: the backbone name
must resolve - from the torch-free catalog for the offline backbones and the ``tv:``/``timm:``
prefixes (the default imports no torch), through the full factory otherwise - and the model's
input must fit the decoded images.
"""

from __future__ import annotations

import logging
from pathlib import Path

from petsml.catalog.backbones import OFFLINE_BACKBONES, quick_resolve
from petsml.config import DEFAULT_PARAMS, OFFICIAL_SOURCE, ConfigError, Params, load_params
from petsml.data.crop import decode_size_for

log = logging.getLogger(__name__)


def check_params_file(path: str | Path = DEFAULT_PARAMS) -> Params:
    """Load ``path`` strictly and resolve ``model.backbone``; :class:`ConfigError` names the key."""
    path = Path(path)
    params = load_params(path)
    _check_backbone(params.model.backbone, path)
    _check_input_fits(params, path)
    _check_folder(params, path)
    return params


def _check_folder(params: Params, path: Path) -> None:
    """An image folder source must exist before DVC hashes it (DVC's own error names no key)."""
    data = params.data
    if data.source == OFFICIAL_SOURCE or Path(data.folder).is_dir():
        return
    what = "is not a folder" if Path(data.folder).exists() else "does not exist"
    raise ConfigError(
        f"{path}: invalid configuration\n  data.folder: {data.folder} {what} (from "
        f"{Path.cwd()}); point it at your photos, <class>/<image> inside, relative to the "
        f"project root or absolute.\nFix data.folder in {path}."
    )


def _check_backbone(name: str, path: Path) -> None:
    if quick_resolve(name) is not None:
        return
    # Only a bare name outside the catalog needs the factory, which imports torch (seconds)
    # and lists what torchvision and timm build.
    from petsml.models.backbones import BackboneError, resolve_backbone

    try:
        resolve_backbone(name)
    except BackboneError as error:
        problem = str(error).removeprefix("model.backbone ")
        raise ConfigError(
            f"{path}: invalid configuration\n  model.backbone: {problem}\n"
            f"Fix model.backbone in {path}."
        ) from None


def _check_input_fits(params: Params, path: Path) -> None:
    """Warn when the model's input (a centre crop of the decoded image) exceeds decode.size.

    Known here without building a network (an offline backbone's own size, or
    ``model.image_size``): ``efficientnet_lite2`` (260 px) with ``decode.size: 256`` would decode
    every photo and only fail at ``featurize``. A warning, not an error: the data stages (and
    tests and sweeps that run only them, with small decode sizes) never build the model.
    """
    size = params.model.image_size
    what = f"model.image_size {size}"
    if size is None:
        resolved = quick_resolve(params.model.backbone)
        if resolved is None or resolved[0] != "offline":
            return  # known once the network is built; training and evaluation check it then
        size = OFFLINE_BACKBONES[resolved[1]].input_size
        what = f"{params.model.backbone}'s input {size}px"
    if size > params.decode.size:
        keep = decode_size_for(size)
        log.warning(
            "%s: decode.size %d is smaller than %s, a centre crop of the decoded image: "
            "featurize and train will fail. Set decode.size to %d (the default's 224-of-256 "
            "crop) or at least %d, or lower model.image_size.",
            path, params.decode.size, what, keep, size,
        )  # fmt: skip
