"""The evaluation results on disk, read back: one reader for every consumer, and the comparison
report's contract (its paths, its columns, its text table).

``reports/metrics.json`` (the evaluate stage, :mod:`petsml.evaluation.report_files`) and
``reports/comparison.json`` (the compare stage, :mod:`petsml.evaluation.comparison`) are read by
the track stage, the flows, the sweep and ``pets report``; they all come here, so a file name, a
column or the fix named in an error lives in one place. Import-light on purpose (json only, no
torch or pandas): the CLI and the Prefect flows load it.

``reports/comparison.json``::

    {"version": 1, "device": "cpu", "ranked_by": "val_accuracy",
     "rows": [{"rank": 1, "strategy": ..., <a key per COLUMNS entry>}, ...],   # best first
     "pareto": {"accuracy": "val_accuracy", "latency": "latency_ms_batch1", "front": [...]},
     "advice": {"advised": ..., "winner": ..., "matched": true | false | null,
                "statement": "..."},
     "onnx": {"measured": true | false, "int8": ..., "what": "..."},  # when the stage passes it
     "notes": ["...", ...]}   # sentences under the table: how extra columns were measured,
                              # why a row's cells are empty (each row may carry its "notes")
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from petsml import paths
from petsml.catalog import metrics
from petsml.errors import PetsError

COMPARISON_JSON = paths.COMPARISON_JSON  # the contract: rows, Pareto front, advice
COMPARISON_MD = paths.COMPARISON_MD
COMPARISON_HTML = paths.COMPARISON_HTML
COMPARISON_PLOTS = paths.COMPARISON_PLOTS
COMPARISON_FILES = (COMPARISON_JSON, COMPARISON_MD, COMPARISON_HTML)
COMPARISON_VERSION = 1
# each strategy's entry of reports/metrics.json (and reports/metrics/<strategy>.json): the
# metrics registry's keys (petsml.catalog.metrics)
METRIC_KEYS = metrics.keys()
RANKED_BY = "val_accuracy"  # as `register` picks: test accuracy is reported, never chosen on


class ResultsError(PetsError):
    """An evaluation result file is missing or unreadable; the message names it and the fix."""


@dataclass(frozen=True)
class Column:
    """One column of the comparison: its row key, header, cell format and what it means."""

    key: str
    header: str
    fmt: str  # format spec of a number ("" = str())
    help: str


# The compare stage's ONNX columns (params compare.onnx / compare.onnx_int8), measured on CPU
# with ONNX Runtime by petsml.export and composed into the rows by petsml.compare_onnx.
ONNX_COLUMNS: tuple[Column, ...] = (
    Column("onnx_fp32_mb", "ONNX MB", ".1f", "ONNX fp32 file size, MB"),
    Column("onnx_fp32_p50_ms", "ONNX ms b1", ".2f",
           "ONNX Runtime fp32 latency on CPU, batch 1, median ms"),
    Column("onnx_fp32_top1_agreement", "ONNX agree", ".3f",
           "share of test photos where ONNX fp32 and PyTorch pick the same class"),
    Column("onnx_int8_mb", "int8 MB", ".1f", "ONNX int8 (static quantization) file size, MB"),
    Column("onnx_int8_p50_ms", "int8 ms b1", ".2f",
           "ONNX Runtime int8 latency on CPU, batch 1, median ms"),
    Column("int8_accuracy_drop_points", "int8 drop pts", "+.1f",
           "test accuracy points int8 loses against PyTorch fp32"),
)  # fmt: skip
ONNX_KEYS = tuple(c.key for c in ONNX_COLUMNS)

# The comparison's columns, in order: the report, `pets report`, the MLflow parent's table and
# the sweep table all read this one list. A new column is one entry here plus one row-builder
# in petsml.evaluation.comparison (ROW_PARTS).
COLUMNS: tuple[Column, ...] = (
    Column("rank", "#", "d", "rank by validation accuracy"),
    Column("strategy", "strategy", "", "transfer strategy"),
    *(Column(row.key, row.header, row.fmt, row.help) for row in metrics.rows()),
    Column("latency_ms_batch1", "ms/img b1", ".2f", "inference latency per image at batch 1"),
    Column("latency_ms_batch16", "ms/img b16", ".2f", "inference latency per image at batch 16"),
    Column("parameters", "params", ",d", "parameters in the saved model"),
    Column("model_mb", "model MB", ".1f", "model.pt file size, MB"),
    Column(
        "transfer_gain", "gain vs scratch", "+.3f", "test accuracy minus scratch's (when it ran)"
    ),
    *ONNX_COLUMNS,
)
COLUMN_KEYS = tuple(c.key for c in COLUMNS)


# --------------------------------------------------------------------------- reading


def finite_number(value: Any) -> float | None:
    """``value`` as a float when it is a finite number (not a bool, None, NaN or a string)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _read(path: Path, required: bool, fix: str) -> Any:
    if not path.is_file():
        if not required:
            return None
        raise ResultsError(f"{path}: missing. {fix}")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        if not required:
            return None
        raise ResultsError(f"{path}: not valid JSON ({error}). {fix}") from None


def read_metrics(root: str | Path = ".", *, required: bool = True) -> dict[str, dict] | None:
    """``reports/metrics.json``: ``{strategy: {val_accuracy, test_accuracy, ...}}``.

    ``required=False`` reads a missing or damaged file as None (the flows: a run with
    ``--targets split`` has no metrics)."""
    found = _read(Path(root) / paths.METRICS, required, "Run `dvc repro evaluate` first.")
    if found is not None and not isinstance(found, Mapping):
        if not required:
            return None
        raise ResultsError(f"{Path(root) / paths.METRICS}: not a mapping of strategies. "
                           "Run `dvc repro evaluate`.")  # fmt: skip
    return found


def read_comparison(root: str | Path = ".", *, required: bool = True) -> dict[str, Any] | None:
    """``reports/comparison.json`` (see the module docstring); None when absent and not
    ``required``."""
    found = _read(
        Path(root) / COMPARISON_JSON,
        required,
        "Run `dvc repro` (or `dvc repro compare`) to write the comparison report.",
    )
    if found is not None and not (
        isinstance(found, Mapping) and isinstance(found.get("rows"), list)
    ):
        if not required:
            return None
        raise ResultsError(
            f"{Path(root) / COMPARISON_JSON}: no rows. Run `dvc repro compare` to rewrite it."
        )
    return found


def rows_by_strategy(report: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """The report's rows keyed by strategy ({} for no report)."""
    rows = (report or {}).get("rows") or []
    return {row["strategy"]: dict(row) for row in rows if isinstance(row, Mapping)}


# --------------------------------------------------------------------------- text


def cell(column: Column, value: Any) -> str:
    """One formatted cell; a missing or non-finite number is ``-``."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if column.fmt and isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return format(value, column.fmt)
        except ValueError:  # e.g. "d" on a float
            return format(value, ".4g")
    return str(value)


def text_table(
    rows: Iterable[Mapping[str, Any]], columns: Sequence[Column] = COLUMNS, markdown: bool = False
) -> str:
    """Rows as a fixed-width text table (or a Markdown one)."""
    cells = [[cell(c, row.get(c.key)) for c in columns] for row in rows]
    headers = [c.header for c in columns]
    if markdown:
        lines = ["| " + " | ".join(headers) + " |", "|" + " --- |" * len(headers)]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in cells])
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    numeric = [bool(c.fmt) for c in columns]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ).rstrip()

    return "\n".join([line(headers), *(line(r) for r in cells)])


def render_text(report: Mapping[str, Any]) -> str:
    """The comparison as ``pets report`` prints it: the table, the Pareto front, the advice."""
    rows = report.get("rows") or []
    pareto = report.get("pareto") or {}
    advice = report.get("advice") or {}
    lines = [
        f"Strategies ranked by {report.get('ranked_by', RANKED_BY)} "
        f"(latency measured on {report.get('device', '?')}):",
        "",
        text_table(rows),
        "",
        f"Pareto front ({pareto.get('accuracy', RANKED_BY)} vs "
        f"{pareto.get('latency', 'latency')}): {', '.join(pareto.get('front') or []) or '-'}",
    ]
    if advice.get("statement"):
        lines.append(f"Advice: {advice['statement']}")
    lines += [str(note) for note in report.get("notes") or []]
    lines.append(f"Full report: {COMPARISON_MD}, {COMPARISON_HTML}")
    return "\n".join(lines)
