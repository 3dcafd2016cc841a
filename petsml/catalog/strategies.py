"""The strategy registry: one row per transfer strategy, the one place that knows them.

A row says what the strategy is as data - its kind (``frozen``: a head on the cached frozen
features; ``trained``: the network trained from the decoded images), which feature and head a
frozen one fits, which blocks a trained one trains at which rates, whether it is the baseline
the transfer gain is measured against, which cells of the advice's 2x2 table it answers - and
names its code and its settings by reference (:mod:`petsml.catalog.refs`), so the ``params``
stage checks ``train.strategies`` without importing torch.

A strategy is one module and one row. Built-in rows are :data:`BUILT_IN`; an installed package
adds rows through the ``petsml.strategies`` entry point group (each entry point names a
:class:`StrategyRow`), and they run under ``dvc repro`` like the built-in ones. A row's
``settings`` names the pydantic model of its ``params.yaml`` section (the values live in
params.yaml); a row without settings has no section.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cache
from typing import Literal

from petsml.catalog.plugins import installed
from petsml.errors import PetsError

log = logging.getLogger(__name__)

ENTRY_POINTS = "petsml.strategies"
CELLS = ("small+similar", "small+uncertain", "small+unlike",
         "large+similar", "large+uncertain", "large+unlike")  # fmt: skip


class StrategyError(PetsError):
    """An unknown strategy name, or a registry row that does not hold together."""


@dataclass(frozen=True)
class StrategyRow:
    """One transfer strategy (see the module docstring)."""

    name: str
    kind: Literal["frozen", "trained"]
    fit: str  # "module:function" (strategy, params, out_dir, inputs) -> summary
    settings: str | None = None  # "module:Model" of its params.yaml section; None: no section
    feature: Literal["penultimate", "early"] = "penultimate"  # what a frozen head reads
    head: str | None = None  # frozen: "module:function" fitting the head (petsml.models.heads)
    block_lrs: str | None = None  # trained: "module:function" saying which blocks train how fast
    pretrained: bool = True  # trained: start from the pretrained weights (model.pretrained)
    cache_frozen_trunk: bool = False  # trained: run the frozen blocks once (cached_top)
    advised_for: tuple[str, ...] = ()  # cells of the 2x2 table this strategy answers
    baseline: bool = False  # the transfer gain of every other strategy is measured against it

    def __post_init__(self) -> None:
        if self.kind == "frozen" and self.head is None:
            raise StrategyError(f"strategy {self.name!r}: a frozen strategy names its head")
        if self.kind == "trained" and self.block_lrs is None:
            raise StrategyError(f"strategy {self.name!r}: a trained strategy names block_lrs")
        unknown = set(self.advised_for) - set(CELLS)
        if unknown:
            raise StrategyError(f"strategy {self.name!r}: advised_for {sorted(unknown)} are not "
                                f"cells of the table ({', '.join(CELLS)})")  # fmt: skip


BUILT_IN: tuple[StrategyRow, ...] = (
    StrategyRow(
        "feature_extractor", "frozen", "petsml.training.frozen:fit",
        settings="petsml.strategy_settings:LinearParams", feature="penultimate",
        head="petsml.models.heads:fit_logistic",
        advised_for=("small+similar", "small+uncertain"),
    ),
    StrategyRow(
        "svm_early", "frozen", "petsml.training.frozen:fit",
        settings="petsml.strategy_settings:LinearParams", feature="early",
        head="petsml.models.heads:fit_linear_svm", advised_for=("small+unlike",),
    ),
    StrategyRow(
        "finetune_top", "trained", "petsml.training.finetune:fit",
        settings="petsml.strategy_settings:FinetuneTopParams",
        block_lrs="petsml.training.param_groups:top_blocks", cache_frozen_trunk=True,
        advised_for=("large+similar", "large+uncertain"),
    ),
    StrategyRow(
        "finetune_full", "trained", "petsml.training.finetune:fit",
        settings="petsml.strategy_settings:FinetuneFullParams",
        block_lrs="petsml.training.param_groups:layer_decay", advised_for=("large+unlike",),
    ),
    StrategyRow(
        "scratch", "trained", "petsml.training.finetune:fit",
        settings="petsml.strategy_settings:ScratchParams",
        block_lrs="petsml.training.param_groups:every_block", pretrained=False, baseline=True,
    ),
)  # fmt: skip


@cache
def rows() -> dict[str, StrategyRow]:
    """Every strategy: the built-in rows, then installed ones (names must be unique)."""
    table: dict[str, StrategyRow] = {}
    for row in (*BUILT_IN, *installed(ENTRY_POINTS, StrategyRow)):
        if row.name in table:
            raise StrategyError(f"strategy {row.name!r} is registered twice")
        table[row.name] = row
    return table


def names() -> tuple[str, ...]:
    return tuple(rows())


def get(name: str) -> StrategyRow:
    """The row called ``name``; the error names the known ones and the params key."""
    try:
        return rows()[name]
    except KeyError:
        raise StrategyError(
            f"unknown strategy {name!r}; use one of {', '.join(rows())} (train.strategies in "
            "params.yaml)"
        ) from None


def for_cell(cell: str) -> str:
    """The strategy the advice recommends in ``cell`` of the 2x2 table."""
    for row in rows().values():
        if cell in row.advised_for:
            return row.name
    raise StrategyError(f"no registered strategy answers the cell {cell!r}")


def baseline() -> str | None:
    """The strategy every transfer gain is measured against (None: no row is the baseline)."""
    return next((row.name for row in rows().values() if row.baseline), None)
