"""The model registry: versions, the champion/challenger aliases and the promotion gate.

MLflow 3 deprecates registry *stages*; this module uses aliases only. ``challenger`` points at
the newest registered candidate; ``champion`` at the version that serves
(``models:/<name>@champion``). A challenger takes ``champion`` only when it beats the champion
on the same test images: higher accuracy *and* a paired McNemar test below
``registry.max_p_value`` (:func:`gate`). Every alias move is recorded as a tag on the version
that receives the alias (``alias_event.<utc time>.<alias>`` = JSON with time, reason, previous
holder), and a version that becomes champion remembers the one it replaced
(``previous_champion``), so :meth:`ModelRegistry.rollback` can undo a promotion and
:meth:`ModelRegistry.history` can list every move.

The statistics (:func:`mcnemar`, :func:`pair_predictions`, :func:`gate`) are pure functions.
"""

from __future__ import annotations

import getpass
import json
import logging
import math
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from petsml.errors import PetsError

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
EVENT_PREFIX = "alias_event."
PREVIOUS_CHAMPION_TAG = "previous_champion"
RUN_ID_TAG = "run_id"
PREDICTIONS_ARTIFACT = "eval/predictions.csv"
# Below this many discordant pairs McNemar uses the exact binomial test, above it the
# chi-square approximation with continuity correction (the usual rule of thumb: b + c < 25).
EXACT_BELOW = 25


class RegistryError(PetsError):
    """A registry request that cannot be met (no champion, unknown version, ...)."""


class TestSetMismatch(RegistryError):
    """Two models' predictions do not cover the same test images with the same labels."""

    __test__ = False  # not a pytest test class


# --------------------------------------------------------------------------- statistics


@dataclass(frozen=True)
class McNemarResult:
    b: int  # discordant pairs where only the first model (the champion) is right
    c: int  # discordant pairs where only the second model (the challenger) is right
    statistic: float | None  # chi-square statistic; None for the exact test
    p_value: float
    method: str  # "exact" | "chi2" | "none" (no discordant pairs)


def mcnemar(b: int, c: int, exact_below: int = EXACT_BELOW) -> McNemarResult:
    """Two-sided McNemar test on the discordant counts ``b`` and ``c``.

    With ``b + c < exact_below`` the exact test: under H0 each discordant pair goes either way
    with probability 1/2, so ``p = min(1, 2 * P[Binom(b + c, 1/2) <= min(b, c)])``. Otherwise
    the chi-square statistic with continuity correction ``(|b - c| - 1)^2 / (b + c)`` on one
    degree of freedom. No discordant pairs at all gives ``p = 1``.
    """
    from scipy import stats

    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0, got b={b}, c={c}")
    n = b + c
    if n == 0:
        return McNemarResult(b, c, None, 1.0, "none")
    if n < exact_below:
        p = min(1.0, 2.0 * float(stats.binom.cdf(min(b, c), n, 0.5)))
        return McNemarResult(b, c, None, p, "exact")
    statistic = (abs(b - c) - 1) ** 2 / n
    return McNemarResult(b, c, float(statistic), float(stats.chi2.sf(statistic, 1)), "chi2")


@dataclass(frozen=True)
class PairedComparison:
    n: int  # test images both models predicted
    both: int  # both right
    champion_only: int  # b: only the champion right
    challenger_only: int  # c: only the challenger right
    neither: int

    @property
    def champion_accuracy(self) -> float:
        return (self.both + self.champion_only) / self.n

    @property
    def challenger_accuracy(self) -> float:
        return (self.both + self.challenger_only) / self.n

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "champion_accuracy": self.champion_accuracy,
            "challenger_accuracy": self.challenger_accuracy,
        }


def _correctness(frame: pd.DataFrame, who: str) -> pd.DataFrame:
    missing = {"image_id", "label"} - set(frame.columns)
    if "correct" not in frame.columns and "pred" not in frame.columns:
        missing.add("pred (or correct)")
    if missing:
        raise RegistryError(
            f"{who} predictions lack column(s) {sorted(missing)}; {PREDICTIONS_ARTIFACT} must "
            "hold image_id, label, pred, correct (written by the track stage)."
        )
    if frame["image_id"].duplicated().any():
        dup = frame.loc[frame["image_id"].duplicated(), "image_id"].iloc[0]
        raise RegistryError(f"{who} predictions list image {dup!r} more than once.")
    if "correct" in frame.columns:
        correct = frame["correct"].map(_as_bool)
    else:
        correct = frame["label"].astype(str) == frame["pred"].astype(str)
    return pd.DataFrame(
        {
            "image_id": frame["image_id"].astype(str),
            "label": frame["label"].astype(str),
            "correct": correct.astype(bool),
        }
    )


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "t")
    return bool(value)


def pair_predictions(champion: pd.DataFrame, challenger: pd.DataFrame) -> PairedComparison:
    """Join two per-image test predictions on ``image_id`` and count the 2x2 table.

    Raises :class:`TestSetMismatch` unless both cover exactly the same images with the same
    labels: models scored on different test sets cannot be compared pairwise.
    """
    a = _correctness(champion, "champion")
    b = _correctness(challenger, "challenger")
    ids_a, ids_b = set(a["image_id"]), set(b["image_id"])
    if ids_a != ids_b:
        only_a, only_b = sorted(ids_a - ids_b), sorted(ids_b - ids_a)
        raise TestSetMismatch(
            f"the test sets differ: {len(only_a)} image(s) only in the champion's predictions "
            f"(e.g. {only_a[:3]}), {len(only_b)} only in the challenger's (e.g. {only_b[:3]})"
        )
    if not ids_a:
        raise TestSetMismatch("the predictions are empty: no test images to compare on")
    joined = a.merge(b, on="image_id", suffixes=("_a", "_b"), validate="one_to_one")
    relabelled = joined["label_a"] != joined["label_b"]
    if relabelled.any():
        raise TestSetMismatch(
            f"the test sets differ: {int(relabelled.sum())} image(s) carry different labels "
            f"(e.g. {joined.loc[relabelled, 'image_id'].iloc[0]!r})"
        )
    ca, cb = joined["correct_a"], joined["correct_b"]
    return PairedComparison(
        n=len(joined),
        both=int((ca & cb).sum()),
        champion_only=int((ca & ~cb).sum()),
        challenger_only=int((~ca & cb).sum()),
        neither=int((~ca & ~cb).sum()),
    )


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reason: str
    p_value: float | None = None
    comparison: PairedComparison | None = None
    test: McNemarResult | None = None


def gate(champion: pd.DataFrame, challenger: pd.DataFrame, max_p_value: float) -> GateDecision:
    """Should ``challenger`` replace ``champion``? Both are per-image test predictions.

    Yes only if the challenger's test accuracy is strictly higher on the same images and the
    McNemar p-value is below ``max_p_value``.
    """
    try:
        pair = pair_predictions(champion, challenger)
    except TestSetMismatch as error:
        return GateDecision(False, f"not comparable: {error}")
    test = mcnemar(pair.champion_only, pair.challenger_only)
    acc = (
        f"test accuracy {pair.challenger_accuracy:.4f} vs champion {pair.champion_accuracy:.4f} "
        f"on {pair.n} images; discordant pairs {pair.challenger_only} for / "
        f"{pair.champion_only} against; McNemar ({test.method}) p={test.p_value:.4g}"
    )
    if pair.challenger_accuracy <= pair.champion_accuracy:
        return GateDecision(False, f"not better: {acc}", test.p_value, pair, test)
    if test.p_value >= max_p_value:
        return GateDecision(
            False, f"not significant (p >= {max_p_value}): {acc}", test.p_value, pair, test
        )
    return GateDecision(True, f"better and significant (p < {max_p_value}): {acc}",
                        test.p_value, pair, test)  # fmt: skip


def pick_best(val_accuracy: Mapping[str, float | None]) -> str:
    """The strategy with the highest VALIDATION accuracy (ties: first in name order)."""
    scored = {k: v for k, v in val_accuracy.items() if v is not None and not math.isnan(v)}
    if not scored:
        raise RegistryError(
            "no strategy has a val_accuracy metric; re-run `dvc repro track` so each child run "
            "logs val_accuracy."
        )
    return sorted(scored, key=lambda k: (-scored[k], k))[0]


# --------------------------------------------------------------------------- alias events


@dataclass(frozen=True)
class AliasEvent:
    time: str  # ISO 8601 UTC
    alias: str
    version: str  # the version that received the alias
    previous: str | None  # the version that held it before (None: nobody)
    action: str  # register | gate | promote | rollback
    reason: str
    user: str

    def tag_key(self) -> str:
        stamp = self.time.replace("-", "").replace(":", "").replace("+0000", "Z")
        return f"{EVENT_PREFIX}{stamp}.{self.alias}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+0000")


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name in some containers
        return "unknown"


def _float_or_none(value: Any) -> float | None:
    try:
        return None if value in (None, "", "None") else float(value)
    except (TypeError, ValueError):
        return None


def _version_str(version: Any) -> str:
    text = str(version).strip()
    if text.lower().startswith("v") and text[1:].isdigit():
        text = text[1:]
    if not text.isdigit():
        raise RegistryError(f"{version!r} is not a model version number (e.g. 3).")
    return text


@contextmanager
def _global_uri(uri: str) -> Iterator[None]:
    """Point mlflow's fluent API at ``uri`` for a block (mlflow.register_model uses it)."""
    import mlflow

    before_tracking, before_registry = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before_tracking)
        mlflow.set_registry_uri(before_registry)


class ModelRegistry:
    """One registered model (``<prefix>-<task>``) in the MLflow registry at ``tracking_uri``."""

    def __init__(self, name: str, tracking_uri: str | None = None) -> None:
        from mlflow import MlflowClient

        from petsml.tracking.store import ensure_store, sqlite_path
        from petsml.tracking.store import tracking_uri as default_uri

        tracking_uri = tracking_uri or default_uri()
        db = sqlite_path(tracking_uri)
        if db is not None and not db.is_file():  # do not create an empty store by reading it
            raise RegistryError(
                f"no MLflow database at {db} ({tracking_uri}): run the pipeline (`dvc repro`) "
                "from the project root, or point MLFLOW_TRACKING_URI at the registry."
            )
        ensure_store(tracking_uri)  # a store another process is still creating: wait for it
        self.name = name
        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    # ---- reading
    def exists(self) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(self.name)
        except MlflowException as error:
            if error.error_code == "RESOURCE_DOES_NOT_EXIST":
                return False
            raise
        return True

    def versions(self) -> list:
        """Every version of the model, oldest first (empty if the model is not registered)."""
        found, token = [], None
        while True:
            page = self.client.search_model_versions(
                f"name = '{self.name}'", max_results=1000, page_token=token
            )
            found.extend(page)
            token = page.token
            if not token:
                break
        return sorted(found, key=lambda v: int(v.version))

    def version(self, version: Any):
        from mlflow.exceptions import MlflowException

        number = _version_str(version)
        try:
            return self.client.get_model_version(self.name, number)
        except MlflowException as error:
            if error.error_code == "RESOURCE_DOES_NOT_EXIST":
                known = [v.version for v in self.versions()]
                raise RegistryError(
                    f"{self.name} has no version {number} (versions: {known or 'none'}) in "
                    f"the registry at {self.tracking_uri}."
                ) from None
            raise

    def aliases(self) -> dict[str, str]:
        """alias -> version of this registered model ({} if not registered)."""
        if not self.exists():
            return {}
        return {k: str(v) for k, v in self.client.get_registered_model(self.name).aliases.items()}

    def aliases_of(self, version: Any) -> list[str]:
        number = _version_str(version)
        return sorted(a for a, v in self.aliases().items() if v == number)

    def by_alias(self, alias: str):
        """The version holding ``alias``, or None."""
        holder = self.aliases().get(alias)
        return None if holder is None else self.client.get_model_version(self.name, holder)

    def champion(self):
        """The champion version; :class:`RegistryError` if there is none."""
        holder = self.by_alias(CHAMPION)
        if holder is None:
            raise RegistryError(
                f"{self.name} has no '{CHAMPION}' alias in the registry at {self.tracking_uri}: "
                "run the pipeline (`dvc repro register`) or `pets promote <version> --reason ...`."
            )
        return holder

    def find_by_run(self, run_id: str):
        """The version registered from ``run_id`` (tag ``run_id`` or its run), or None."""
        for v in self.versions():
            if v.tags.get(RUN_ID_TAG) == run_id or v.run_id == run_id:
                return v
        return None

    def run_of(self, version) -> str:
        run_id = version.tags.get(RUN_ID_TAG) or version.run_id
        if not run_id:
            raise RegistryError(
                f"{self.name} version {version.version} has no source run (tag {RUN_ID_TAG!r}); "
                "it cannot be compared on test predictions."
            )
        return run_id

    def predictions(self, version) -> pd.DataFrame:
        """The per-image test predictions logged with the version's run."""
        run_id = self.run_of(version)
        with tempfile.TemporaryDirectory() as tmp:
            try:
                local = self.client.download_artifacts(run_id, PREDICTIONS_ARTIFACT, tmp)
            except Exception as error:  # missing artifact: MlflowException or OSError
                raise RegistryError(
                    f"run {run_id} (version {version.version} of {self.name}) has no "
                    f"{PREDICTIONS_ARTIFACT} artifact: {error}"
                ) from None
            return pd.read_csv(local)

    def history(self) -> list[AliasEvent]:
        """Every recorded alias move of this model, oldest first."""
        events = []
        for v in self.versions():
            for key, value in v.tags.items():
                if key.startswith(EVENT_PREFIX):
                    try:
                        events.append(AliasEvent(**json.loads(value)))
                    except (TypeError, ValueError):
                        log.warning("version %s: unreadable tag %s", v.version, key)
        return sorted(events, key=lambda e: (e.time, int(e.version)))

    def champion_record(self) -> dict[str, Any] | None:
        """What ``reports/registry.json`` remembers of the champion, to recover it if the
        store is lost: its version, run, strategy, run key, scores and the resolved location
        of its test predictions (artifacts usually outlive a deleted database)."""
        holder = self.by_alias(CHAMPION)
        if holder is None:
            return None
        run_id = holder.tags.get(RUN_ID_TAG) or holder.run_id
        predictions_uri = None
        if run_id:
            try:
                artifact_uri = self.client.get_run(run_id).info.artifact_uri
                predictions_uri = f"{artifact_uri.rstrip('/')}/{PREDICTIONS_ARTIFACT}"
            except Exception as error:  # the run is gone: record what is left
                log.warning("champion v%s: run %s unreadable (%s)", holder.version, run_id, error)
        tags = holder.tags
        return {
            "version": str(holder.version),
            "run_id": run_id,
            "strategy": tags.get("strategy"),
            "run_key": tags.get("run_key"),
            "git_commit": tags.get("git_commit"),
            "val_accuracy": _float_or_none(tags.get("val_accuracy")),
            "test_accuracy": _float_or_none(tags.get("test_accuracy")),
            "predictions_uri": predictions_uri,
        }

    @contextmanager
    def promotion_lock(self) -> Iterator[None]:
        """Serialise champion gates on this store (a file lock beside a SQLite database)."""
        from petsml.tracking.store import store_lock

        with store_lock(self.tracking_uri, "promote"):
            yield

    # ---- writing
    def register(
        self,
        model_uri: str,
        run_id: str,
        tags: Mapping[str, Any] | None = None,
        description: str | None = None,
    ):
        """A new version from ``model_uri`` tagged with ``run_id`` (use find_by_run first)."""
        import mlflow

        all_tags = {k: str(v) for k, v in (tags or {}).items() if v is not None}
        all_tags[RUN_ID_TAG] = run_id
        with _global_uri(self.tracking_uri):
            version = mlflow.register_model(model_uri, self.name, tags=all_tags)
        if description:
            self.describe(version.version, description)
        log.info("registered %s version %s from %s", self.name, version.version, model_uri)
        return self.client.get_model_version(self.name, version.version)

    def describe(self, version: Any, description: str) -> None:
        self.client.update_model_version(
            self.name, _version_str(version), description=description[:5000]
        )

    def set_tags(self, version: Any, tags: Mapping[str, Any]) -> None:
        number = _version_str(version)
        for key, value in tags.items():
            if value is not None:
                self.client.set_model_version_tag(self.name, number, key, str(value))

    def move_alias(self, alias: str, version: Any, action: str, reason: str) -> AliasEvent:
        """Point ``alias`` at ``version`` and record the move on that version."""
        number = _version_str(version)
        self.version(number)  # clear error for an unknown version
        previous = self.aliases().get(alias)
        event = AliasEvent(_now(), alias, number, previous, action, reason, _user())
        self.client.set_registered_model_alias(self.name, alias, number)
        self.client.set_model_version_tag(
            self.name, number, event.tag_key(), json.dumps(event.as_dict(), sort_keys=True)
        )
        log.info("%s@%s -> v%s (was %s): %s", self.name, alias, number, previous, reason)
        return event

    def promote(self, version: Any, reason: str, action: str = "promote") -> AliasEvent:
        """Make ``version`` the champion (no gate); remembers the champion it replaces."""
        number = _version_str(version)
        self.version(number)
        previous = self.aliases().get(CHAMPION)
        if previous == number:
            raise RegistryError(f"version {number} is already the {CHAMPION} of {self.name}.")
        if previous is not None:
            self.client.set_model_version_tag(self.name, number, PREVIOUS_CHAMPION_TAG, previous)
        return self.move_alias(CHAMPION, number, action, reason)

    def rollback(self, reason: str | None = None) -> AliasEvent:
        """Give ``champion`` back to the version the current champion replaced."""
        current = self.champion()
        previous = current.tags.get(PREVIOUS_CHAMPION_TAG)
        if not previous:
            raise RegistryError(
                f"{self.name} version {current.version} is the {CHAMPION} and replaced no "
                f"earlier champion (no '{PREVIOUS_CHAMPION_TAG}' tag): nothing to roll back to. "
                "Use `pets promote <version> --reason ...` to pick one by hand."
            )
        self.version(previous)  # it may have been deleted
        why = reason or f"rollback from version {current.version}"
        return self.move_alias(CHAMPION, previous, "rollback", why)


# --------------------------------------------------------------------------- the stage

METRIC_KEYS = ("val_accuracy", "test_accuracy", "test_top5", "test_macro_f1", "test_ece")
CAS_ATTEMPTS = 5  # re-gates when a tracking server's champion moved during a gate


def _metrics(client, run_id: str) -> dict[str, float]:
    return dict(client.get_run(run_id).data.metrics)


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
        raise RegistryError("reports/registry.json recorded no location of its test predictions")
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
    prefix = f"v{number} vs lost {who}, recorded in reports/registry.json"
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


def _report(registry, number, strategy, label, decision_reason, p_value, run_id, comparison,
            lost=None) -> dict[str, Any]:  # fmt: skip
    record = registry.champion_record()
    report = {
        "model_name": registry.name,
        "version": number,
        "strategy": strategy,
        "aliases": registry.aliases_of(number),
        "decision": label,
        "p_value": p_value,
        "reason": decision_reason,
        "champion": None if record is None else record["version"],
        "run_id": run_id,
        "comparison": comparison,
        "champion_record": record,
    }
    if record is None and lost is not None:
        report["lost_champion"] = lost  # remembered until a champion is crowned
    return report


def register_execution(
    runs: Mapping[str, Any],
    model_name: str,
    max_p_value: float,
    tracking_uri: str | None = None,
    task: str | None = None,
    project_root: str | Path = ".",
    previous: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Register this execution's best strategy and run the promotion gate.

    ``runs`` is ``reports/mlflow_runs.json``; its ``tracking_uri`` (where the runs live) is
    used unless ``tracking_uri`` is given. ``task``, when given, must match the runs' ``task``
    tag. ``previous`` is the last ``reports/registry.json``: if it names a champion this store
    no longer holds, that champion is not forgotten (:func:`lost_champion`). Returns the new
    ``reports/registry.json`` content. Re-running for a run that is already a version changes
    nothing and reports that version.
    """
    from petsml.tracking.model_card import build_model_card, gather_card_inputs

    for key in ("children", "model_uris"):
        if not runs.get(key):
            raise RegistryError(
                f"reports/mlflow_runs.json has no {key!r}; re-run `dvc repro track`."
            )
    registry = ModelRegistry(model_name, tracking_uri or runs.get("tracking_uri"))
    client = registry.client
    children: dict[str, str] = dict(runs["children"])
    metrics = {strategy: _metrics(client, run_id) for strategy, run_id in children.items()}
    best = pick_best({s: m.get("val_accuracy") for s, m in metrics.items()})
    run_id = children[best]
    run = client.get_run(run_id)
    run_tags = run.data.tags
    if task and run_tags.get("task") and run_tags["task"] != task:
        raise RegistryError(
            f"reports/mlflow_runs.json holds runs of task {run_tags['task']!r} but params.yaml "
            f"data.task is {task!r}; re-run `dvc repro track` (or fix data.task)."
        )
    model_uri = runs["model_uris"].get(best)
    if not model_uri:
        raise RegistryError(
            f"reports/mlflow_runs.json has no model_uris[{best!r}]; re-run `dvc repro track`."
        )

    existing = registry.find_by_run(run_id)
    if existing is not None and existing.tags.get("gate.decision"):
        log.info("run %s is already %s version %s", run_id, model_name, existing.version)
        stored_p = existing.tags.get("gate.p_value")
        reason = (
            f"run {run_id} is already version {existing.version}; not registered again "
            f"(its gate decision: {existing.tags['gate.decision']}: "
            f"{existing.tags.get('gate.reason', '')})"
        )
        return _report(
            registry, str(existing.version), existing.tags.get("strategy", best),
            "already_registered", reason, _float_or_none(stored_p), run_id,
            json.loads(existing.tags.get("gate.comparison", "null")),
            lost_champion(registry, previous),
        )  # fmt: skip

    if existing is not None:  # registered by an interrupted earlier run: finish its gate
        log.info("run %s is %s version %s without a gate decision", run_id, model_name,
                 existing.version)  # fmt: skip
        version = existing
    else:
        m = metrics[best]
        tags = {
            "strategy": best,
            "backbone": run_tags.get("backbone"),
            "task": run_tags.get("task"),
            "git_commit": run_tags.get("git_commit"),
            "dvc_data_hash": run_tags.get("dvc_data_hash"),
            "parent_run_id": runs.get("parent_run_id"),
            "run_key": runs.get("run_key"),
            "model_uri": model_uri,
            **{k: m.get(k) for k in METRIC_KEYS},
        }
        version = registry.register(model_uri, run_id, tags)
    number = str(version.version)

    registry.move_alias(CHALLENGER, number, "register", f"registered from run {run_id} ({best})")
    verdict = gate_and_promote(registry, version, (runs.get("run_key"), best), max_p_value,
                               previous)  # fmt: skip
    decision = verdict.decision
    gate_tags = {
        "gate.decision": verdict.label,
        "gate.reason": decision.reason,
        "gate.p_value": decision.p_value,
        "gate.champion_version": verdict.against,
        "gate.lost_champion": None if verdict.lost is None else json.dumps(verdict.lost),
    }
    if decision.comparison is not None:
        gate_tags["gate.comparison"] = json.dumps(decision.comparison.as_dict(), sort_keys=True)
    registry.set_tags(number, gate_tags)

    card = build_model_card(
        gather_card_inputs(
            client, runs, metrics, best, model_name, number, project_root=project_root
        )
    )
    client.log_text(run_id, card, "model_card.md")
    registry.describe(number, card)
    registry.set_tags(number, {"model_card": f"runs:/{run_id}/model_card.md"})

    comparison = None if decision.comparison is None else decision.comparison.as_dict()
    return _report(registry, number, best, verdict.label, decision.reason, decision.p_value,
                   run_id, comparison, verdict.lost)  # fmt: skip
