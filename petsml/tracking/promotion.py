"""Who holds ``champion``: the gate against the current (or a lost) champion, as a compare-and-set.

A challenger takes ``champion`` only when it beats the champion on the same test images
(:func:`petsml.tracking.gate.gate`: higher accuracy *and* McNemar p below
``registry.max_p_value``). :func:`gate_and_promote` makes the judgement and the alias move one
step: under the store's promotion lock (SQLite), or by re-reading the champion just before the
move (a tracking server). A store rebuilt without its champion does not crown the first version
that comes along: the last ``reports/registry.json`` remembers the champion, and the newcomer
is judged against that one's recorded test predictions (:func:`lost_champion`).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from petsml import paths
from petsml.tracking.errors import RegistryError
from petsml.tracking.gate import GateDecision, gate
from petsml.tracking.model_registry import CHAMPION, ModelRegistry

log = logging.getLogger(__name__)

CAS_ATTEMPTS = 5  # re-gates when a tracking server's champion moved during a gate


@dataclass(frozen=True)
class Verdict:
    decision: GateDecision
    label: str  # champion | promoted | rejected
    against: str | None  # the champion version it was compared with (None: none)
    lost: dict[str, Any] | None = None  # the lost champion it was held against


def lost_champion(registry: ModelRegistry, previous: Mapping[str, Any] | None) -> dict | None:
    """The champion an earlier ``registry.json`` recorded that this store no longer holds.

    ``None`` when there is no such record, it is of another model, or its run is still a
    version here (then the alias was taken away on purpose, not lost).
    """
    if not previous or previous.get("model_name") != registry.name:
        return None
    record = previous.get("lost_champion") or previous.get("champion_record")
    if not isinstance(record, Mapping) or not record.get("run_id"):
        return None
    if registry.find_by_run(str(record["run_id"])) is not None:
        return None
    return dict(record)


def _lost_predictions(lost: Mapping[str, Any]) -> pd.DataFrame:
    import mlflow

    uri = lost.get("predictions_uri")
    if not uri:
        raise RegistryError(f"{paths.REGISTRY_REPORT} recorded no location of its test predictions")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp)
        except Exception as error:  # gone with the store: MlflowException or OSError
            raise RegistryError(f"its test predictions {uri} cannot be read: {error}") from None
        return pd.read_csv(local)


def _judge_against_lost(
    registry: ModelRegistry,
    version,
    number: str,
    candidate: tuple[str | None, str],
    lost: dict[str, Any],
    max_p_value: float,
) -> Verdict:
    """A rebuilt registry has no champion, but the last report named one: do not crown the
    first version that comes along. The same model (run key and strategy) is crowned again;
    another must beat the lost champion's recorded test predictions through the usual gate."""
    run_key, strategy = candidate
    who = (
        f"champion v{lost.get('version')} ({lost.get('strategy')}, test accuracy "
        f"{lost.get('test_accuracy')}, git commit {lost.get('git_commit')})"
    )
    if run_key and lost.get("run_key") == run_key and lost.get("strategy") == strategy:
        why = f"re-crowned: the same model was {who} before the MLflow store lost it"
        return Verdict(GateDecision(True, why), "champion", None, lost)
    try:
        decision = gate(_lost_predictions(lost), registry.predictions(version), max_p_value)
    except RegistryError as error:
        decision = GateDecision(False, f"not comparable: {error}")
    prefix = f"v{number} vs lost {who}, recorded in {paths.REGISTRY_REPORT}"
    if not decision.promote:
        prefix += (
            f" (not crowned; to restore that champion check out its commit and `dvc repro`, "
            f"or crown this one with `pets promote {number} --reason ...`)"
        )
    decision = GateDecision(
        decision.promote, f"{prefix}: {decision.reason}", decision.p_value,
        decision.comparison, decision.test,
    )  # fmt: skip
    return Verdict(decision, "promoted" if decision.promote else "rejected", None, lost)


def _judge(registry, version, number, candidate, previous, max_p_value) -> Verdict:
    """The gate against the current champion (or a lost one, or none: first champion)."""
    champion = registry.by_alias(CHAMPION)
    if champion is None:
        lost = lost_champion(registry, previous)
        if lost is not None:
            return _judge_against_lost(registry, version, number, candidate, lost, max_p_value)
        return Verdict(
            GateDecision(True, "first champion: the registry had no champion"), "champion", None
        )
    if str(champion.version) == number:  # promoted before an interruption
        return Verdict(GateDecision(False, f"v{number} already holds {CHAMPION}"), "champion", None)
    try:
        decision = gate(registry.predictions(champion), registry.predictions(version),
                        max_p_value)  # fmt: skip
    except RegistryError as error:
        decision = GateDecision(False, f"not comparable: {error}")
    decision = GateDecision(
        decision.promote,
        f"v{number} vs champion v{champion.version}: {decision.reason}",
        decision.p_value,
        decision.comparison,
        decision.test,
    )
    return Verdict(decision, "promoted" if decision.promote else "rejected", str(champion.version))


def gate_and_promote(
    registry: ModelRegistry,
    version,
    candidate: tuple[str | None, str],
    max_p_value: float,
    previous: Mapping[str, Any] | None = None,
) -> Verdict:
    """Compare-and-set: judge ``version`` against the champion and promote it, atomically.

    Under the store's promotion lock (SQLite) no other gate can move ``champion`` between the
    comparison and the promotion. A tracking server has no such lock: the champion is read
    again just before promoting, and a change means judging again against the new one.
    """
    number = str(version.version)
    with registry.promotion_lock():
        for _ in range(CAS_ATTEMPTS):
            verdict = _judge(registry, version, number, candidate, previous, max_p_value)
            if not verdict.decision.promote:
                return verdict
            if registry.aliases().get(CHAMPION) != verdict.against:
                log.info("champion moved during the gate of v%s: judging again", number)
                continue
            registry.promote(number, verdict.decision.reason, action="gate")
            return verdict
    raise RegistryError(
        f"{registry.name}@{CHAMPION} kept moving while v{number} was being judged "
        f"({CAS_ATTEMPTS} tries); re-run `dvc repro register`."
    )
