"""A monitoring run's outputs: ``<window>.json``, ``<window>.html`` and one verdict line.

The JSON holds everything the verdict rests on (each detector's p-value, threshold and
details, the settings used, the window's span and model, accuracy on feedback), so a later
reader, the MLflow run it is logged to, or a dashboard can redo the judgement without the store.
The HTML (:mod:`.report_html`) shows the same with figures inline: it opens offline, from a
mail attachment or an MLflow artifact view, with nothing fetched.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from petsml.io import write_json, write_text
from petsml.monitoring.accuracy import AccuracyRow
from petsml.monitoring.drift import DriftResult
from petsml.monitoring.reference import Reference
from petsml.monitoring.settings import MonitorSettings
from petsml.monitoring.window import Window


@dataclass(frozen=True)
class ReportFiles:
    json: Path
    html: Path


def iso(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def window_name(window: Window, when: float | None = None) -> str:
    """``<model>-v<version>-<UTC time of its last prediction>-n<count>``: unique per window,
    sortable by time, safe as a file name."""
    last = float(window.times[-1]) if len(window) else (when or 0.0)
    stamp = datetime.fromtimestamp(last, UTC).strftime("%Y%m%dT%H%M%SZ")
    model = "".join(c if c.isalnum() or c in "-_." else "_" for c in window.model_name) or "model"
    version = f"-v{window.model_version}" if window.model_version else ""
    return f"{model}{version}-{stamp}-n{len(window)}"


def verdict_line(result: DriftResult, window: Window) -> str:
    """One line for a terminal, a flow's state message or an alert."""
    who = f"{window.model_name or 'model'}" + (
        f" v{window.model_version}" if window.model_version else ""
    )
    span = ""
    if len(window):
        span = f" from {iso(float(window.times[0]))} to {iso(float(window.times[-1]))}"
    counted = f"{result.n} predictions ({result.n_unique} distinct photos){span}"
    if result.verdict == "too few":
        return f"TOO FEW {who}: {counted}; no verdict under monitor.min_window distinct photos"
    parts = []
    for d in result.detectors:
        if d.name == "confidence":
            parts.append(f"confidence {d.details['window_mean']:.2f} "
                         f"(reference {d.details['reference_mean']:.2f})")  # fmt: skip
        else:
            parts.append(f"{d.name} p={d.p_value:.3g}")
        if d.drifted:  # a detector outside monitor.alert is reported, not alerted on
            parts[-1] += " DRIFT" if d.alerting else " (changed, not in monitor.alert)"
    head = "DRIFT" if result.verdict == "drift" else "OK"
    return f"{head} {who}: {', '.join(parts)}; {counted}"


def report_data(
    result: DriftResult,
    window: Window,
    reference: Reference,
    settings: MonitorSettings,
    accuracy: list[AccuracyRow],
    name: str,
) -> dict[str, Any]:
    span = {}
    if len(window):
        span = {"first": iso(float(window.times[0])), "last": iso(float(window.times[-1]))}
    return {
        "window": name,
        "created": iso(datetime.now(UTC).timestamp()),
        "model": {"name": window.model_name, "version": window.model_version},
        "span": span,
        "verdict": result.verdict,
        "verdict_line": verdict_line(result, window),
        "drift": result.as_dict(),
        "reference": {
            "size": len(reference),
            "model": reference.model.label(),
            "built": iso(reference.built_at),
        },  # fmt: skip
        "accuracy_on_feedback": [row.as_dict() for row in accuracy],
        "settings": settings.as_dict(),
    }


def write_report(
    out_dir: str | Path,
    result: DriftResult,
    window: Window,
    reference: Reference,
    settings: MonitorSettings,
    accuracy: list[AccuracyRow] | None = None,
    name: str | None = None,
) -> ReportFiles:
    """Write ``<out_dir>/<name>.json`` and ``.html`` atomically; ``name`` defaults to
    :func:`window_name`."""
    from petsml.monitoring.report_html import render_html

    name = name or window_name(window)
    data = report_data(result, window, reference, settings, accuracy or [], name)
    out = Path(out_dir)
    files = ReportFiles(out / f"{name}.json", out / f"{name}.html")
    write_json(files.json, data)
    write_text(files.html, render_html(data, reference, window, settings))
    return files
