"""The monitoring report as one offline HTML page: tables, and figures inlined as PNG data URIs.

No script, stylesheet or font is fetched: the page opens from a file, a mail or an MLflow
artifact view alike. Figures use :class:`matplotlib.figure.Figure` on the Agg canvas (no pyplot
state), as the evaluation figures do. Every value from the store is escaped: class names and
model names come from users' configurations.
"""

from __future__ import annotations

import base64
import html
import io
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from petsml.monitoring.mmd import PCA
from petsml.monitoring.reference import Reference
from petsml.monitoring.settings import MonitorSettings
from petsml.monitoring.window import Window

DPI = 100
REF, WIN = "#4477aa", "#ee6677"  # colour-blind safe pair
TOP_CLASSES = 15

STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1000px;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;
text-align:left}th{background:#f4f4f4}.drift{color:#b00;font-weight:bold}.ok{color:#070}
.figs img{max-width:48%;margin:1%}code{background:#f4f4f4;padding:1px 4px}
"""


def _png(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img alt="figure" src="data:image/png;base64,{data}">'


def _confidence_figure(reference: Reference, window: Window) -> str:
    fig = Figure(figsize=(5, 3.2))
    ax = fig.add_subplot()
    bins = np.linspace(0, 1, 21)
    ax.hist(reference.sample.confidence, bins, density=True, alpha=0.6, color=REF,
            label=f"reference ({len(reference)})")  # fmt: skip
    ax.hist(window.sample.confidence, bins, density=True, alpha=0.6, color=WIN,
            label=f"window ({len(window)})")  # fmt: skip
    ax.set_xlabel("top-1 probability")
    ax.set_title("How sure the model is")
    ax.legend()
    fig.tight_layout()
    return _png(fig)


def _embedding_figure(reference: Reference, window: Window) -> str:
    ref, win = reference.sample.embeddings, window.sample.embeddings
    if ref.shape[1] == 0 or win.shape[1] != ref.shape[1] or len(ref) < 3:
        return ""
    pca = PCA.fit(ref, 2)
    if pca.basis.shape[0] < 2:
        return ""
    a, b = pca.transform(ref), pca.transform(win)
    fig = Figure(figsize=(5, 3.2))
    ax = fig.add_subplot()
    ax.scatter(a[:, 0], a[:, 1], s=8, alpha=0.6, color=REF, label="reference")
    ax.scatter(b[:, 0], b[:, 1], s=8, alpha=0.6, color=WIN, label="window")
    ax.set_xlabel("PC 1 of the reference")
    ax.set_ylabel("PC 2")
    ax.set_title("Embeddings (what the model sees)")
    ax.legend()
    fig.tight_layout()
    return _png(fig)


def _class_figure(reference: Reference, window: Window) -> str:
    names = reference.sample.class_names
    k = len(names)
    ref = np.bincount(reference.sample.predicted, minlength=k) / max(1, len(reference))
    win = np.bincount(window.sample.predicted, minlength=k) / max(1, len(window))
    top = np.argsort(-np.maximum(ref, win), kind="stable")[:TOP_CLASSES]
    fig = Figure(figsize=(5, 3.2))
    ax = fig.add_subplot()
    y = np.arange(len(top))
    ax.barh(y - 0.2, ref[top], 0.4, color=REF, label="reference")
    ax.barh(y + 0.2, win[top], 0.4, color=WIN, label="window")
    ax.set_yticks(y, [names[i].replace("_", " ")[:22] for i in top], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("share of predictions")
    ax.set_title("Predicted classes")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _png(fig)


def _accuracy_figure(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    fig = Figure(figsize=(5, 3.2))
    ax = fig.add_subplot()
    versions = sorted({(r["model_name"], r["model_version"]) for r in rows})
    for name, version in versions:
        mine = [r for r in rows if (r["model_name"], r["model_version"]) == (name, version)]
        x = [r["period"] for r in mine]
        y = np.array([r["accuracy"] for r in mine])
        low, high = np.array([r["low"] for r in mine]), np.array([r["high"] for r in mine])
        err = np.clip([y - low, high - y], 0, None)  # rounding at 0 or 1 must not go negative
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=f"v{version or '?'}")
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("accuracy on feedback")
    ax.set_title("Accuracy on labelled feedback (95 % interval)")
    ax.tick_params(axis="x", labelsize=7, rotation=30)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return _png(fig)


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3g}"
    return html.escape(str(value))


def _detector_rows(data: dict[str, Any]) -> str:
    rows = []
    for d in data["drift"]["detectors"]:
        status = "drift" if d["drifted"] else "ok"
        if d["drifted"] and not d["alerting"]:
            status = "changed (reported only)"
        details = ", ".join(
            f"{html.escape(k)}={_fmt(v)}" for k, v in d["details"].items()
            if not isinstance(v, dict)
        )  # fmt: skip
        css = "drift" if d["drifted"] and d["alerting"] else "ok"
        rows.append(
            f"<tr><td>{html.escape(d['name'])}</td><td>{html.escape(d['method'])}</td>"
            f"<td>{_fmt(d['p_value'])}</td><td>{_fmt(d['threshold'])}</td>"
            f'<td class="{css}">{html.escape(status)}</td><td>{details}</td></tr>'
        )
    return "".join(rows)


def _accuracy_rows(rows: list[dict[str, Any]]) -> str:
    return "".join(
        f"<tr><td>{_fmt(r['model_name'])} v{_fmt(r['model_version'])}</td>"
        f"<td>{_fmt(r['period'])}</td><td>{r['n']}</td><td>{r['accuracy']:.2f}</td>"
        f"<td>{r['low']:.2f}–{r['high']:.2f}</td></tr>"
        for r in rows
    )


def render_html(
    data: dict[str, Any], reference: Reference, window: Window, settings: MonitorSettings
) -> str:
    """The page for :func:`petsml.monitoring.report.report_data`'s ``data``."""
    verdict = data["verdict"]
    css = "drift" if verdict == "drift" else "ok"
    figures = []
    if len(window) and verdict != "too few":
        tested = window.deduplicated() if settings.deduplicate else window
        figures = [_confidence_figure(reference, tested), _embedding_figure(reference, tested),
                   _class_figure(reference, tested)]  # fmt: skip
    figures.append(_accuracy_figure(data["accuracy_on_feedback"]))
    accuracy = data["accuracy_on_feedback"]
    accuracy_table = (
        "<table><tr><th>model</th><th>period</th><th>answers</th><th>accuracy</th>"
        f"<th>95 % interval</th></tr>{_accuracy_rows(accuracy)}</table>"
        if accuracy else "<p>No feedback yet.</p>"
    )  # fmt: skip
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Monitoring {html.escape(data["window"])}</title>
<style>{STYLE}</style></head><body>
<h1>Monitoring: {_fmt(data["model"]["name"])} v{_fmt(data["model"]["version"])}</h1>
<p class="{css}">{html.escape(data["verdict_line"])}</p>
<p>Window <code>{html.escape(data["window"])}</code>: {data["drift"]["n"]} predictions,
{data["drift"]["n_unique"]} distinct photos tested, against {data["reference"]["size"]}
validation photos of {html.escape(data["reference"]["model"])}. False-alarm budget
alpha = {settings.alpha} over the tests in <code>monitor.alert</code>
({html.escape(", ".join(settings.alert))}).</p>
<h2>Detectors</h2>
<table><tr><th>detector</th><th>method</th><th>p-value</th><th>threshold</th><th>status</th>
<th>details</th></tr>{_detector_rows(data)}</table>
<div class="figs">{"".join(figures)}</div>
<h2>Accuracy on labelled feedback</h2>{accuracy_table}
<p>Created {html.escape(data["created"])}. Accuracy on feedback is measured on the photos
people chose to label (wrong answers are reported more often): read its trend, not its level.
</p></body></html>
"""
