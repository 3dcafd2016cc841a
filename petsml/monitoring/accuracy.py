"""Accuracy on labelled feedback, per model version and period.

Each prediction counts once, with its latest feedback: correct when the label given equals the
label predicted (a user can confirm an answer as well as correct it). The interval is Wilson's
95 % score interval, which stays inside [0, 1] and honest at the handful of answers a week of
feedback brings.

Read it for what it is: accuracy on the photos people chose to label. Users report wrong
answers more readily than right ones, so it understates accuracy on all traffic; its use is the
trend of one version over time and the comparison of versions under the same habit.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from petsml.monitoring.feedback import Feedback

Period = Literal["day", "week", "month", "all"]
Z95 = 1.959964


@dataclass(frozen=True)
class AccuracyRow:
    model_name: str
    model_version: str
    period: str  # start of the period, ISO date ("all" for the whole span)
    n: int
    correct: int
    accuracy: float
    low: float  # Wilson 95 % interval
    high: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def wilson(correct: int, n: int, z: float = Z95) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def period_start(when: float, period: Period) -> str:
    """The ISO date starting the ``period`` that holds ``when`` (the prediction's time, UTC)."""
    day = datetime.fromtimestamp(when, UTC).date()
    if period == "all":
        return "all"
    if period == "week":
        day -= timedelta(days=day.weekday())  # Monday
    elif period == "month":
        day = day.replace(day=1)
    return day.isoformat()


def accuracy_over_time(feedback: Iterable[Feedback], period: Period = "week") -> list[AccuracyRow]:
    """Accuracy per (model, version, period of the prediction), oldest period first."""
    if period not in ("day", "week", "month", "all"):
        raise ValueError(f"period must be day, week, month or all, got {period!r}")
    groups: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0])
    for item in feedback:
        key = (item.model_name, item.model_version, period_start(item.prediction_time, period))
        groups[key][0] += 1
        groups[key][1] += int(item.correct)
    rows = []
    for (name, version, start), (n, correct) in groups.items():
        low, high = wilson(correct, n)
        rows.append(AccuracyRow(name, version, start, n, correct, correct / n, low, high))
    return sorted(rows, key=lambda r: (r.period, r.model_name, _version_key(r.model_version)))


def _version_key(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (0, version)
