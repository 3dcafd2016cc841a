"""The comparison report's files, from the dict :mod:`petsml.evaluation.comparison` builds.

* ``reports/comparison.json``: the contract (:mod:`petsml.evaluation.results`), written last;
* ``reports/comparison.md``: the table, the advice check, the Pareto front, the figures;
* ``reports/comparison.html``: the same page with the figures inline (base64 PNG) and its
  style in the page: one file that opens offline, nothing fetched;
* ``reports/comparison/``: ``strategies.csv`` (``dvc plots show``: accuracy against latency and
  training time) and the two PNGs the Markdown links.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from petsml.evaluation.results import (
    COLUMNS,
    COMPARISON_HTML,
    COMPARISON_JSON,
    COMPARISON_MD,
    COMPARISON_PLOTS,
    cell,
    text_table,
)
from petsml.io import atomic_dir, write_json, write_text

DPI = 110
PLOT_CSV = "strategies.csv"
LATENCY_PNG = "accuracy_latency.png"
TRAIN_TIME_PNG = "accuracy_train_time.png"
PLOT_COLUMNS = (
    "strategy",
    "val_accuracy",
    "test_accuracy",
    "latency_ms_batch1",
    "latency_ms_batch16",
    "train_seconds",
    "pareto",
)


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def scatter_png(
    rows: Sequence[Mapping[str, Any]],
    x: str,
    y: str,
    xlabel: str,
    title: str,
    front: Sequence[str] = (),
) -> bytes:
    """One point per strategy, labelled; the Pareto front (when given) joined and ringed."""
    points = [
        (r["strategy"], px, py)
        for r in rows
        if (px := _finite(r.get(x))) is not None and (py := _finite(r.get(y))) is not None
    ]
    fig = Figure(figsize=(6.0, 4.0))
    ax = fig.add_subplot()
    right = max((px for _, px, _ in points), default=0.0)
    for name, px, py in points:
        on_front = name in front
        ax.scatter([px], [py], s=46, color="tab:red" if on_front else "tab:blue", zorder=3)
        left = px == right and len(points) > 1  # the rightmost label goes left of its point
        ax.annotate(name, (px, py), textcoords="offset points", xytext=(-5 if left else 5, 4),
                    ha="right" if left else "left", fontsize=8)  # fmt: skip
    if front:
        line = sorted((px, py) for name, px, py in points if name in front)
        ax.step([p[0] for p in line], [p[1] for p in line], where="post", color="tab:red",
                alpha=0.6, label="Pareto front")  # fmt: skip
        ax.legend(loc="lower right", fontsize=8)
    xs = [p[1] for p in points]
    if xs and min(xs) > 0 and max(xs) / min(xs) > 20:
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.margins(x=0.18, y=0.12)  # room for the labels beside the points
    ax.set_xlabel(xlabel)
    ax.set_ylabel(y.replace("_", " "))
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.subplots_adjust(left=0.12, right=0.96, bottom=0.13, top=0.9)
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=DPI, format="png")
    return buffer.getvalue()


def figures(report: Mapping[str, Any]) -> dict[str, bytes]:
    """File name -> PNG bytes of the two figures."""
    rows, pareto = report["rows"], report["pareto"]
    accuracy = pareto["accuracy"]
    return {
        LATENCY_PNG: scatter_png(
            rows, pareto["latency"], accuracy, f"ms per image at batch 1 ({report['device']})",
            "accuracy vs inference latency (red: Pareto front)", pareto["front"],
        ),
        TRAIN_TIME_PNG: scatter_png(
            rows, "train_seconds", accuracy, "training time (s)", "accuracy vs training time"
        ),
    }  # fmt: skip


def _notes(report: Mapping[str, Any]) -> list[str]:
    """The sentences under the table, shared by the Markdown and the HTML."""
    rows, pareto, advice = report["rows"], report["pareto"], report["advice"]
    lat = report["latency"]
    gains = [r for r in rows if r.get("transfer_gain") is not None]
    gain = (
        "Transfer gain: test accuracy over `scratch` ("
        + ", ".join(f"{r['strategy']} {r['transfer_gain']:+.3f}" for r in gains)
        + ")."
        if gains
        else f"Transfer gain: `{report['baseline']}` did not run, so there is no baseline."
    )
    return [
        f"Ranked by `{report['ranked_by']}` (what `register` selects on); the test columns are "
        "the held-out estimate, never used to choose.",
        f"Latency on `{report['device']}`, per image, at batch {' and '.join(map(str, lat['batch_sizes']))}: "  # noqa: E501
        f"{lat['what']}.",
        f"**Advice**: {advice['statement']}",
        f"**Pareto front** (`{pareto['accuracy']}` vs `{pareto['latency']}`): "
        + (", ".join(f"`{s}`" for s in pareto["front"]) or "none"),
        gain,
        *(str(note) for note in report.get("notes") or []),
    ]


def markdown(report: Mapping[str, Any]) -> str:
    lines = ["# Strategy comparison", "", text_table(report["rows"], markdown=True), ""]
    for note in _notes(report):
        lines += [note, ""]
    lines += [
        f"![accuracy vs latency]({COMPARISON_PLOTS.name}/{LATENCY_PNG})",
        "",
        f"![accuracy vs training time]({COMPARISON_PLOTS.name}/{TRAIN_TIME_PNG})",
        "",
        "Columns: " + "; ".join(f"**{c.header}**: {c.help}" for c in COLUMNS) + ".",
        "",
    ]
    return "\n".join(lines)


def _inline(text: str) -> str:
    """Markdown's `code` and **bold** of a note as HTML, the rest escaped."""
    out, parts = [], html.escape(text).split("`")
    for i, part in enumerate(parts):
        out.append(f"<code>{part}</code>" if i % 2 else part)
    joined = "".join(out)
    bold = joined.split("**")
    return "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(bold))


TEXT_CELL = ' class="text"'
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 75em; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }
th { background: #f2f2f2; }
td.text { text-align: left; }
tr.front td { background: #fff3f0; }
img { max-width: 48%; margin: 0.5em 1% 0 0; border: 1px solid #eee; }
"""


def html_page(report: Mapping[str, Any], pngs: Mapping[str, bytes]) -> str:
    """A self-contained page: inline style, inline images, no scripts, no remote URL."""
    head = "".join(
        f'<th title="{html.escape(c.help)}">{html.escape(c.header)}</th>' for c in COLUMNS
    )
    body = []
    for row in report["rows"]:
        cls = ' class="front"' if row.get("pareto") else ""
        cells = "".join(
            f"<td{'' if c.fmt else TEXT_CELL}>{html.escape(cell(c, row.get(c.key)))}</td>"
            for c in COLUMNS
        )
        body.append(f"<tr{cls}>{cells}</tr>")
    notes = "".join(f"<p>{_inline(n)}</p>" for n in _notes(report))
    images = "".join(
        f'<img alt="{html.escape(name)}" src="data:image/png;base64,'
        f'{base64.b64encode(data).decode("ascii")}">'
        for name, data in pngs.items()
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>Strategy comparison</title><style>{STYLE}</style></head><body>"
        f"<h1>Strategy comparison</h1><table><thead><tr>{head}</tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table>"
        f"<p><small>Pareto-front rows are shaded.</small></p>{notes}{images}</body></html>\n"
    )


def plot_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    lines = [",".join(PLOT_COLUMNS)]
    for row in rows:
        values = (row.get(c) for c in PLOT_COLUMNS)
        lines.append(",".join("" if v is None else str(v).lower() if isinstance(v, bool)
                              else str(v) for v in values))  # fmt: skip
    return "\n".join(lines) + "\n"


def write_comparison(report: Mapping[str, Any], root: str | Path = ".") -> None:
    """Every comparison file, each atomically; the JSON contract last."""
    root = Path(root)
    pngs = figures(report)
    with atomic_dir(root / COMPARISON_PLOTS) as tmp:
        (tmp / PLOT_CSV).write_text(plot_csv(report["rows"]))
        for name, data in pngs.items():
            (tmp / name).write_bytes(data)
    write_text(root / COMPARISON_MD, markdown(report))
    write_text(root / COMPARISON_HTML, html_page(report, pngs))
    write_json(root / COMPARISON_JSON, report)
