"""The monitor's settings: where records go, how much is kept, when a window counts as drifted.

One frozen dataclass, so every caller (the serving model, the web page, ``pets monitor``, the
flow) reads the same values. It has no defaults: params.yaml's ``monitor:`` section owns every
value (:class:`petsml.monitor_section.MonitorParams` types it), and
:meth:`MonitorSettings.from_mapping` takes that section and names the ``monitor.<key>`` at
fault, and the fix, on bad input; :func:`load_settings` reads it from a params file.

How the thresholds combine (docs/MONITORING.md, "How drift is decided"): the statistical
detectors named in ``alert`` share the false-alarm budget ``alpha`` (Bonferroni: each is tested
at ``alpha / len(tests)``; inside BBSD the per-class KS tests split their share again), so a
window from the reference's own distribution is flagged with probability at most ``alpha``
whatever the window size. The confidence rule is a threshold on effect size, not a test.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

from petsml.errors import PetsError

# The detectors a verdict can rest on (``alert``); "image" tests the photos' size, format and
# greyscale share, which real traffic changes more often than it hurts the model.
DETECTORS = ("input", "prediction", "confidence", "image")
TESTS = ("input", "prediction", "image")  # those that are hypothesis tests (share alpha)
ROTATIONS = ("drop", "archive")


class MonitorSettingsError(PetsError):
    """A ``monitor:`` value is missing, of the wrong type or out of range."""


@dataclass(frozen=True)
class MonitorSettings:
    # --- recording (serving side)
    log: bool  # record each prediction of `pets web` / `pets serve`
    store: str  # a path (SQLite) or postgresql://user@host/db
    keep_photos: bool  # keep the photo itself (personal data: opt in)
    max_rows: int  # rotation: records kept at most
    max_mb: float  # rotation: MB of stored vectors and photos kept at most
    rotation: Literal["drop", "archive"]  # what happens to the oldest past a cap
    archive_dir: str  # rotation: archive writes SQLite files here
    durable: bool  # SQLite synchronous=FULL: survive power loss, not only a killed process
    # --- the window and its tests
    window: int  # the last N predictions of the served version
    min_window: int  # fewer distinct photos: no verdict ("too few")
    deduplicate: bool  # a photo sent twice counts once (by content hash)
    alpha: float  # false-alarm budget of one window, split over the tests in `alert`
    alert: tuple[str, ...]
    pca_components: int  # embeddings reduced to this many dimensions for MMD
    permutations: int  # MMD permutation test: smallest p-value 1 / (permutations + 1)
    domain_classifier: bool  # also fit reference-vs-window logistic regression (AUC)
    confidence_drop: float  # alert when mean top-1 probability falls this much
    low_confidence: float  # a prediction under this top-1 probability is "unsure"
    low_share_rise: float  # alert when the unsure share rises this much
    seed: int  # permutations, PCA and the domain classifier's folds
    # --- outputs and the loop
    reports: str  # <window>.json and <window>.html
    retrain_on_drift: bool  # the flow starts the continuous-training deployment

    def __post_init__(self) -> None:
        def bad(key: str, why: str) -> MonitorSettingsError:
            value = getattr(self, key)
            return MonitorSettingsError(
                f"monitor.{key}: {value!r} {why}; fix it in params.yaml's monitor: section"
            )

        for key in ("max_rows", "window", "permutations", "pca_components"):
            if getattr(self, key) < 1:
                raise bad(key, "must be at least 1")
        if self.min_window < 2:
            raise bad("min_window", "must be at least 2 (a test needs two photos)")
        if self.max_mb <= 0:
            raise bad("max_mb", "must be positive")
        if not 0 < self.alpha < 1:
            raise bad("alpha", "must be between 0 and 1 (0.05 = one false alarm in 20 windows)")
        for key in ("confidence_drop", "low_confidence", "low_share_rise"):
            if not 0 < getattr(self, key) <= 1:
                raise bad(key, "must be in (0, 1]: it is a probability")
        if self.rotation not in ROTATIONS:
            raise bad("rotation", f"must be one of {ROTATIONS}")
        unknown = [name for name in self.alert if name not in DETECTORS]
        if unknown or not self.alert:
            raise bad("alert", f"must name one or more of {DETECTORS}")
        if not str(self.store).strip():
            raise bad("store", "is empty: give a file path or a postgresql:// URL")

    @property
    def max_bytes(self) -> int:
        return int(self.max_mb * 1024 * 1024)

    def alpha_per_test(self) -> float:
        """Each alerting test's share of ``alpha`` (Bonferroni over the tests in ``alert``)."""
        tests = [name for name in self.alert if name in TESTS]
        return self.alpha / max(1, len(tests))

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["alert"] = list(self.alert)
        return data

    def replace(self, **changes: Any) -> MonitorSettings:
        """A copy with some values changed (checked again), e.g. a loader's overrides."""
        return MonitorSettings.from_mapping({**self.as_dict(), **changes})

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> MonitorSettings:
        """Settings from params.yaml's ``monitor:`` mapping; every key must be there."""
        values = dict(values or {})
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise MonitorSettingsError(
                f"monitor.{unknown[0]}: unknown setting; the known ones are {sorted(known)}"
            )
        missing = [name for name in known if name not in values]
        if missing:
            raise MonitorSettingsError(
                f"monitor.{missing[0]}: missing; add it to params.yaml's monitor: section "
                "(docs/MONITORING.md lists every key)"
            )
        converted: dict[str, Any] = {}
        for key, value in values.items():
            kind = _KINDS[key]
            try:
                converted[key] = _convert(value, kind)
            except (TypeError, ValueError):
                raise MonitorSettingsError(
                    f"monitor.{key}: {value!r} is not a {kind}; fix it in params.yaml"
                ) from None
        return cls(**converted)


def load_settings(params_file: str | Path = "params.yaml") -> MonitorSettings:
    """The ``monitor:`` section of ``params_file``, checked like a stage loads it."""
    from petsml.config import load_params

    return MonitorSettings.from_mapping(load_params(params_file).monitor.model_dump())


def _convert(value: Any, kind: str) -> Any:
    """``value`` as ``kind``; no silent truthiness (``"no"`` is not a bool)."""
    if kind == "bool":
        if not isinstance(value, bool):
            raise TypeError(value)
        return value
    if kind == "int":
        if isinstance(value, bool) or not float(value).is_integer():
            raise TypeError(value)
        return int(value)
    if kind == "float":
        if isinstance(value, bool):
            raise TypeError(value)
        return float(value)
    if kind == "list":
        if isinstance(value, str) or not isinstance(value, list | tuple):
            raise TypeError(value)
        return tuple(str(item) for item in value)
    if not isinstance(value, str):
        raise TypeError(value)
    return value


# the type each key is read as (the dataclass's annotations are strings under PEP 563)
_KINDS = {
    "log": "bool", "store": "str", "keep_photos": "bool", "max_rows": "int", "max_mb": "float",
    "rotation": "str", "archive_dir": "str", "durable": "bool", "window": "int",
    "min_window": "int", "deduplicate": "bool", "alpha": "float", "alert": "list",
    "pca_components": "int", "permutations": "int", "domain_classifier": "bool",
    "confidence_drop": "float", "low_confidence": "float", "low_share_rise": "float",
    "seed": "int", "reports": "str", "retrain_on_drift": "bool",
}  # fmt: skip
