"""The row type of the strategy registry (:mod:`petsml.training.strategies`) and a fit's inputs.

Apart from the table so the fit functions can name these types without importing the table
(which imports them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from torch import nn

from petsml import paths
from petsml.config import Params

# Called after every epoch of a trained strategy, once its checkpoint is on disk.
EpochCallback = Callable[[int, nn.Module, dict[str, Any]], None]


@dataclass(frozen=True)
class Inputs:
    """Where a fit reads its data and keeps its checkpoint (each fit uses what it consumes)."""

    features_dir: Path = paths.FEATURES
    splits_dir: Path = paths.SPLITS
    decoded_dir: Path = paths.DECODED
    checkpoint_dir: Path | None = None  # trained strategies: where last.pt lives
    early_block_file: Path = paths.EARLY_BLOCK  # model.early_block: auto, as advise resolved it
    # train/val rows the data_issues stage left out (None: none; the train stage passes its file)
    excluded_file: Path | None = None
    resume: bool = False
    on_epoch_end: EpochCallback | None = None


@dataclass(frozen=True)
class Strategy:
    """A row of the strategy registry (:mod:`petsml.catalog.strategies`) with its code resolved.

    ``fit(strategy, params, out_dir, inputs)`` writes the model folder
    (:func:`petsml.models.model_dir.write_model_dir`) and returns its summary. The remaining
    fields are knobs read by the fit functions: ``feature`` and ``head`` by
    :func:`petsml.training.frozen.fit`; ``pretrained``, ``block_lrs`` and
    ``cache_frozen_trunk`` by :func:`petsml.training.finetune.fit`.
    """

    name: str
    kind: Literal["frozen", "trained"]
    fit: Callable[[Strategy, Params, Path, Inputs], dict[str, Any]]
    feature: str = "penultimate"  # which cached feature a frozen strategy fits on
    head: Callable[..., Any] | None = None  # its head fitter (petsml.models.heads)
    pretrained: bool = True  # trained: start from the pretrained weights (model.pretrained)
    block_lrs: Callable[[Any, int, str], dict[int, float]] | None = None  # trained: who trains
    cache_frozen_trunk: bool = False  # trained: run the frozen blocks once (cached_top)

    def settings(self, params: Params) -> Any:
        """This strategy's section of ``params`` (None when it has none)."""
        return params.settings_of(self.name)
