"""The strategy registry: one row per transfer strategy, and the one place that knows them.

Each :class:`~petsml.training.spec.Strategy` row says what the strategy consumes (the cached
``features`` or the decoded ``images``), which ``params.yaml`` section holds its settings, the
function that fits it and that function's knobs (which feature and head a frozen-feature
strategy fits; whether a trained one starts pretrained, which blocks train at which rate,
whether its frozen trunk is cached). ``stages/train.py`` dispatches through :func:`fit`; nothing
else compares strategy names. To add a strategy, add a row here (or :func:`register` one from
outside the package); see docs/ARCHITECTURE.md, "Adding a strategy".

The names also live in :data:`petsml.config.STRATEGIES` (config sits below training, so it
cannot import this table); ``tests/test_strategies.py`` checks the two agree.
"""

from __future__ import annotations

from pathlib import Path

from petsml.config import Params
from petsml.models.early_block import load_resolved, unread_block, with_early_block
from petsml.models.heads import fit_linear_svm, fit_logistic
from petsml.training import finetune, frozen
from petsml.training.loop import TrainingError
from petsml.training.param_groups import every_block, layer_decay, top_blocks
from petsml.training.spec import Inputs, Strategy

REGISTRY: dict[str, Strategy] = {
    row.name: row
    for row in (
        Strategy(
            "feature_extractor", "features", "feature_extractor", frozen.fit,
            feature="penultimate", head=fit_logistic,
        ),
        Strategy(
            "svm_early", "features", "svm_early", frozen.fit,
            feature="early", head=fit_linear_svm,
        ),
        Strategy(
            "finetune_top", "images", "finetune_top", finetune.fit,
            block_lrs=top_blocks, cache_frozen_trunk=True,
        ),
        Strategy("finetune_full", "images", "finetune_full", finetune.fit, block_lrs=layer_decay),
        Strategy(
            "scratch", "images", "scratch", finetune.fit, block_lrs=every_block, pretrained=False
        ),
    )
}  # fmt: skip


def names() -> tuple[str, ...]:
    """Every registered strategy name, in table order."""
    return tuple(REGISTRY)


def get(strategy: str | Strategy) -> Strategy:
    """The registry row for ``strategy`` (a row is returned as it is)."""
    if isinstance(strategy, Strategy):
        return strategy
    try:
        return REGISTRY[strategy]
    except KeyError:
        raise TrainingError(
            f"unknown strategy {strategy!r}; use one of {', '.join(REGISTRY)} "
            "(train.strategies in params.yaml)"
        ) from None


def trained(strategy: str | Strategy) -> Strategy:
    """The row of a strategy that trains the network from images; a clear error otherwise."""
    row = REGISTRY.get(strategy) if isinstance(strategy, str) else strategy
    if row is None or row.consumes != "images" or row.block_lrs is None:
        trained_names = [s.name for s in REGISTRY.values() if s.consumes == "images"]
        raise TrainingError(
            f"{getattr(row, 'name', strategy)!r} is not a trained strategy; use one of "
            f"{', '.join(trained_names)}"
        )
    return row


def register(row: Strategy) -> Strategy:
    """Add ``row`` to the registry (a plug-in strategy); its name must be new."""
    if row.name in REGISTRY:
        raise TrainingError(f"strategy {row.name!r} is already registered")
    REGISTRY[row.name] = row
    return row


def unregister(name: str) -> None:
    """Remove a strategy added with :func:`register` (tests, plug-ins being unloaded)."""
    REGISTRY.pop(name, None)


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
