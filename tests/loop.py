"""A registered project for the serving-to-training loop tests, and its traffic.

:func:`loop_project`: :func:`tests.tracking.register_in_own_store` with 16 photos per breed, so
the champion's reference holds :data:`VAL` validation photos, and params whose window is those
photos (``monitor.window``), a verdict from 20 distinct photos and the image detector alerting
too; :func:`recording_model` loads the champion recording its answers as ``pets predict
--record`` does; :func:`shifted` is a photo greyscaled and blurred (base64, as a client sends).
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pandas as pd
import yaml
from PIL import Image, ImageFilter

from petsml import paths

NAME = "oxford-pets-breed"
VAL = 52  # validation photos: 13 of each of the 4 breeds
REAL_VAL = 28  # with the real sample's 10 photos per breed: 7 of each


def loop_project(root: Path, photos: Path | None = None, **monitor) -> tuple[Path, str]:
    """(project, tracking URI): champion v1, the ``monitor:`` changes above and ``monitor``'s.
    ``photos``: real photos (the Oxford-IIIT sample, 10 per breed) instead of generated ones;
    then 7 per breed validate: :data:`REAL_VAL`."""
    from tests.tracking import register_in_own_store

    per_breed, window = (16, VAL) if photos is None else (10, REAL_VAL)
    project, uri, _ = register_in_own_store(root, per_breed=per_breed, real_photos=photos)
    raw = yaml.safe_load((project / "params.yaml").read_text())
    alert = ["input", "prediction", "confidence", "image"]
    raw["monitor"].update(window=window, min_window=20, keep_photos=True, alert=alert, **monitor)
    (project / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return project, uri


def val_files(project: Path) -> list[str]:
    frame = pd.read_csv(project / paths.split_csv("val"))
    return [str(project / paths.RAW / f) for f in frame["file"]]


def recording_model(project: Path, uri: str, record: bool = True, **overrides):
    """The champion's pyfunc, recording per the project's params (``overrides``: changed keys)."""
    from petsml.tracking.alias_model import load_alias_model
    from petsml.tracking.model_registry import ModelRegistry
    from petsml.tracking.monitor_config import loader_config
    from petsml.tracking.pyfunc_monitor import OVERRIDES_KEY

    config = loader_config(record, "predict", project / "params.yaml")
    if overrides:
        config[OVERRIDES_KEY] = {**config.get(OVERRIDES_KEY, {}), **overrides}
    registry = ModelRegistry(NAME, uri)
    return load_alias_model(registry, "champion", {"allow_paths": True}, record=config).model


def shifted(path: str) -> str:
    img = Image.open(path).convert("L").filter(ImageFilter.GaussianBlur(3)).convert("RGB")
    out = io.BytesIO()
    img.save(out, format="JPEG")
    return base64.b64encode(out.getvalue()).decode()
