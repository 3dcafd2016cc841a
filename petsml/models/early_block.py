"""``model.early_block: auto`` (the default): the block svm_early reads, as the advice found it.

A fixed block is a guess that depends on the backbone and on how ImageNet-like the photos are
(on real pet photos svm_early at Lite1's block 3 reaches 0.55 test accuracy, at block 4 0.8).
``auto`` takes the earlier block on which svm_early's own head scored best in the advise stage
(``reports/advice.json``'s ``early_block``), so svm_early runs where the advice points; an
integer in params.yaml still wins.

The advise stage writes the resolved number to ``data/early_block.json``; ``train`` depends on
that small file rather than on the whole advice, so editing an ``advise`` threshold changes the
advice without re-training unless the block changes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from petsml import paths
from petsml.config import Params
from petsml.errors import PetsError
from petsml.io import read_json, write_json

AUTO = "auto"


class EarlyBlockError(PetsError):
    """``model.early_block: auto`` cannot be resolved (advice missing, stale or malformed)."""


def resolve_early_block(params: Params, advice_path: str | Path = paths.ADVICE) -> int:
    """``model.early_block`` as a block index: the number itself, or for ``auto`` the block the
    advice in ``advice_path`` (for the same backbone) found best for svm_early."""
    requested = params.model.early_block
    if requested != AUTO:
        return int(requested)
    advice = _read(Path(advice_path), "run `dvc repro advise` first")
    _same_backbone(advice.get("backbone"), params, advice_path)
    try:
        return int(advice["early_block"])
    except (KeyError, TypeError, ValueError):
        raise EarlyBlockError(
            f"{advice_path}: no early_block to resolve model.early_block: auto (the backbone "
            "has no block before its last); set model.early_block to a number, or re-run "
            "`dvc repro advise`."
        ) from None


def write_resolved(params: Params, block: int, target: str | Path = paths.EARLY_BLOCK) -> None:
    """Record the resolved block with what it was resolved for (checked when it is read)."""
    write_json(
        target,
        {
            "backbone": params.model.backbone,
            "requested": params.model.early_block,
            "early_block": int(block),
        },
    )


def unread_block(params: Params) -> int:
    """``model.early_block`` for a network that never reads its early block (the fine-tuned
    ones: penultimate features only): the number as given, ``auto`` as the last block."""
    early = params.model.early_block
    return -1 if early == AUTO else int(early)


def with_early_block(params: Params, block: int) -> Params:
    """``params`` with ``model.early_block`` replaced by ``block`` (the rest untouched)."""
    model = params.model.model_copy(update={"early_block": int(block)})
    return params.model_copy(update={"model": model})


def load_resolved(params: Params, source: str | Path = paths.EARLY_BLOCK) -> Params:
    """``params`` with ``model.early_block`` as the advise stage resolved it.

    Fails, naming the stage to re-run, when the file was written for another backbone or
    another ``model.early_block`` than ``params`` say (a stage run by hand, out of order).
    """
    if params.model.early_block != AUTO:  # a fixed block needs nothing from advise
        return params
    record = _read(Path(source), "run `dvc repro advise` (it writes it)")
    _same_backbone(record.get("backbone"), params, source)
    if record.get("requested") != params.model.early_block:
        raise EarlyBlockError(
            f"{source} resolved model.early_block={record.get('requested')!r}, but params.yaml "
            f"says {params.model.early_block!r}; re-run `dvc repro advise`."
        )
    return with_early_block(params, int(record["early_block"]))


def _read(path: Path, hint: str) -> dict[str, Any]:
    if not path.exists():
        raise EarlyBlockError(f"{path}: not found; {hint}.")
    data = read_json(path)
    if not isinstance(data, dict):
        raise EarlyBlockError(f"{path}: expected a JSON object; re-run `dvc repro advise`.")
    return data


def _same_backbone(recorded: Any, params: Params, path: str | Path) -> None:
    if recorded != params.model.backbone:
        raise EarlyBlockError(
            f"{path} was made for backbone {recorded!r}, but model.backbone is "
            f"{params.model.backbone!r}; re-run `dvc repro advise`."
        )
