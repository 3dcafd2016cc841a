"""An exportable project: :func:`tests.tracking.build_project` plus the decoded cache it lacks.

``pets export`` measures parity on the test split and calibrates int8 on training photos from
``data/decoded``; the tracked test project has splits and raw photos but no cache, so this adds
one (every split, at the tiny model's decode size).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from petsml import paths
from petsml.data.decode import decode_images
from tests.models import DECODE_SIZE


class HistogramHead(nn.Module):
    """A head with an operator ONNX opset 17 lacks (histc): a model that cannot be exported."""

    def __init__(self, linear: nn.Module) -> None:
        super().__init__()
        self.linear = linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(x)
        return y + torch.histc(y, bins=4).sum()


def decode_project(project: Path) -> Path:
    """Decode every split of ``project`` into ``project/data/decoded``; returns that folder."""
    frame = pd.concat(
        pd.read_csv(project / paths.split_csv(name), keep_default_na=False)
        for name in paths.SPLIT_NAMES
    )
    out = project / paths.DECODED
    decode_images(frame, project / paths.RAW, out, DECODE_SIZE, workers=1)
    return out


@contextmanager
def mlflow_uris_restored() -> Iterator[None]:
    """Restore MLflow's tracking and registry URIs (and ``store.configure``'s note) afterwards.

    ``ModelRegistry.register`` sets the registry URI, which MLflow also exports as
    ``MLFLOW_REGISTRY_URI``; left behind, a later test's ``registered_model_name`` would
    register into this test's store.
    """
    import mlflow
    from mlflow.tracking._model_registry import utils as registry_utils

    from petsml.tracking import store

    tracking, registry = mlflow.get_tracking_uri(), registry_utils._registry_uri
    env, configured = os.environ.get("MLFLOW_REGISTRY_URI"), store._set_by_configure
    try:
        yield
    finally:
        mlflow.set_tracking_uri(tracking)
        registry_utils._registry_uri = registry
        store._set_by_configure = configured
        if env is None:
            os.environ.pop("MLFLOW_REGISTRY_URI", None)
        else:
            os.environ["MLFLOW_REGISTRY_URI"] = env
