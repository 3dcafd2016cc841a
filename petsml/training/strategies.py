"""The strategies as training runs them: the catalog's rows with their code resolved.

:mod:`petsml.catalog.strategies` owns the names and what each strategy is (built-in rows and
installed plug-ins); here each row's references become the functions
:func:`petsml.training.frozen.fit` and :func:`petsml.training.finetune.fit` read, and
:func:`fit` is the one dispatch every caller goes through (``stages/train.py``, the flows,
the tests).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from petsml.catalog import strategies as catalog
from petsml.catalog.refs import resolve
from petsml.config import Params
from petsml.models.early_block import load_resolved, unread_block, with_early_block
from petsml.training.loop import TrainingError
from petsml.training.spec import Inputs, Strategy


def names() -> tuple[str, ...]:
    """Every registered strategy name, in registry order."""
    return catalog.names()


@cache
def _row(name: str) -> Strategy:
    row = catalog.rows()[name]
    return Strategy(
        name=row.name,
        kind=row.kind,
        fit=resolve(row.fit),
        feature=row.feature,
        head=resolve(row.head) if row.head else None,
        pretrained=row.pretrained,
        block_lrs=resolve(row.block_lrs) if row.block_lrs else None,
        cache_frozen_trunk=row.cache_frozen_trunk,
    )


def get(strategy: str | Strategy) -> Strategy:
    """The resolved row for ``strategy`` (a row is returned as it is)."""
    if isinstance(strategy, Strategy):
        return strategy
    if strategy not in catalog.rows():
        raise TrainingError(str(catalog.StrategyError(
            f"unknown strategy {strategy!r}; use one of {', '.join(catalog.names())} "
            "(train.strategies in params.yaml)")))  # fmt: skip
    return _row(strategy)


def trained(strategy: str | Strategy) -> Strategy:
    """The row of a strategy that trains the network from images; a clear error otherwise."""
    row = get(strategy) if isinstance(strategy, Strategy) or strategy in catalog.rows() else None
    if row is None or row.kind != "trained" or row.block_lrs is None:
        trained_names = [r.name for r in catalog.rows().values() if r.kind == "trained"]
        raise TrainingError(
            f"{getattr(row, 'name', strategy)!r} is not a trained strategy; use one of "
            f"{', '.join(trained_names)}"
        )
    return row


def fit(strategy: str | Strategy, params: Params, out_dir: str | Path, inputs: Inputs) -> dict:
    """Fit ``strategy`` with its row's function: the one dispatch every caller goes through.

    ``model.early_block: auto`` is resolved here: a strategy that reads the early block gets the
    block the advise stage found (``inputs.early_block_file``); the others build their backbone
    at its last block, which they never read."""
    row = get(strategy)
    if row.feature == "early":
        params = load_resolved(params, inputs.early_block_file)
    else:
        params = with_early_block(params, unread_block(params))
    return row.fit(row, params, Path(out_dir), inputs)
