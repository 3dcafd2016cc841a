"""Did the advise stage's recommendation win? The comparison's answer, in one sentence.

The advise stage recommends a strategy before anything trains; compare ranks what ran by
validation accuracy. This judges the one against the other, naming the configuration that ran
when it differs from the advised one (``model.early_block``), so a wrong advice is visible in
``reports/comparison.md`` rather than silently overridden.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from petsml import paths
from petsml.evaluation.results import RANKED_BY, finite_number


def _points(a: float, b: float) -> str:
    return f"{100 * (a - b):.1f} points"


def advice_verdict(advice: Mapping[str, Any] | None, ranked: Sequence[Mapping[str, Any]]) -> dict:
    """Did the advise stage's strategy win on validation? ``matched`` is True, False, or None
    when there is nothing to check (no advice, or no strategy with a validation accuracy);
    ``statement`` says so in one sentence, and why not when it did not."""
    winner = ranked[0] if ranked and finite_number(ranked[0].get(RANKED_BY)) is not None else None
    advised = str(advice["strategy"]) if advice and advice.get("strategy") else None
    out = {
        "advised": advised,
        "cell": (advice or {}).get("cell"),
        "winner": winner["strategy"] if winner else None,
    }

    def verdict(matched: bool | None, reason: str, statement: str) -> dict:
        return {**out, "matched": matched, "reason": reason, "statement": statement}

    if advised is None:
        return verdict(None, "no_advice", f"no advice to check: {paths.ADVICE} is missing "
                       "(run `dvc repro advise`).")  # fmt: skip
    block = (advice or {}).get("early_block")
    said = f"the advice ({out['cell']}) was {advised}" + (
        f" at block {block}" if advised == "svm_early" and block is not None else ""
    )
    by_name = {r["strategy"]: r for r in ranked}
    ran_block = (by_name.get(advised) or {}).get("block")
    if advised == "svm_early" and block is not None and ran_block not in (None, block):
        out["ran_block"] = ran_block
        said += (f", but svm_early ran at block {ran_block} (model.early_block in params.yaml); "
                 "this checks the strategy as it ran")  # fmt: skip
    if advised not in by_name:
        ran = ", ".join(r["strategy"] for r in ranked) or "none"
        return verdict(False, "not_run", f"not checked: {said}, which did not run (ran: {ran}); "
                       "add it to train.strategies in params.yaml to test the advice.")  # fmt: skip
    if winner is None:
        statement = f"not checked: {said}, but no strategy has a validation accuracy."
        return verdict(None, "no_validation", statement)
    win_val = float(winner[RANKED_BY])
    if winner["strategy"] == advised:
        runner = ranked[1] if len(ranked) > 1 else None
        runner_val = finite_number(runner.get(RANKED_BY)) if runner else None
        margin = (
            f"{_points(win_val, runner_val)} ahead of {runner['strategy']}"
            if runner is not None and runner_val is not None
            else "the only strategy with a validation accuracy"
        )
        return verdict(True, "won", f"matched: {said}, and it won on validation "
                       f"({win_val:.3f}, {margin}).")  # fmt: skip
    mine = by_name[advised]
    mine_val = finite_number(mine.get(RANKED_BY))
    behind = (
        f"by {_points(win_val, mine_val)} ({win_val:.3f} vs {mine_val:.3f}); {advised} ranked "
        f"{mine['rank']} of {len(ranked)}"
        if mine_val is not None
        else f"({win_val:.3f}); {advised} has no validation accuracy"
    )
    test_w, test_a = (
        finite_number(winner.get("test_accuracy")),
        finite_number(mine.get("test_accuracy")),
    )
    on_test = (
        f" On test: {winner['strategy']} {test_w:.3f}, {advised} {test_a:.3f}."
        if test_w is not None and test_a is not None
        else ""
    )
    return verdict(False, "beaten", f"did not match: {said}, but {winner['strategy']} won on "
                   f"validation {behind}.{on_test}")  # fmt: skip
