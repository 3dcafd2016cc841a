"""The compare stage's work: which strategy to ship, one table, with what shipping it costs.

A row per strategy that ran, ranked by validation accuracy (``register``'s rule). The quality
columns are read from what evaluate wrote (``reports/metrics.json``, through
:mod:`petsml.evaluation.results`), never recomputed; the cost columns are measured here on the
model folders each ``train@<strategy>`` wrote: inference latency per image on the run's device
(:mod:`petsml.evaluation.torch_latency`), parameters and model file size. Then the table-wide parts:
the transfer gain over ``scratch`` (when it ran), the Pareto front of accuracy against latency,
whether the advise stage's recommendation won, and how many test photos have a near-duplicate
in train with each strategy's test accuracy without them (:func:`near_duplicate_check`).

A row is a dict built by the small functions of :data:`ROW_PARTS` (one strategy each) and
:data:`TABLE_PARTS` (the whole table); a new column is a :data:`results.COLUMNS` entry plus one
function here. The files are written by :mod:`petsml.evaluation.comparison_render`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from petsml import paths
from petsml.catalog import strategies
from petsml.config import Params
from petsml.data.decode import DecodedImages
from petsml.data.tensors import pick_device
from petsml.evaluation import torch_latency
from petsml.evaluation.advice_verdict import advice_verdict
from petsml.evaluation.results import (
    COMPARISON_VERSION,
    METRIC_KEYS,
    RANKED_BY,
    ResultsError,
    finite_number,
    read_metrics,
)
from petsml.models.classifier import Classifier, load_classifier
from petsml.models.model_dir import model_file, read_summary

log = logging.getLogger(__name__)

FRONT_ACCURACY = RANKED_BY  # the Pareto front trades what selection sees ...
FRONT_LATENCY = "latency_ms_batch1"  # ... against what one request waits


@dataclass
class StrategyRun:
    """What one strategy left on disk: its metrics.json entry, summary and model file."""

    strategy: str
    metrics: dict[str, Any]
    summary: dict[str, Any]
    model_path: Path
    _model: Classifier | None = field(default=None, repr=False)
    _spec: dict[str, Any] | None = field(default=None, repr=False)

    def model(self) -> Classifier:
        """The saved classifier, loaded once (the size and latency parts share it)."""
        if self._model is None:
            self._model, self._spec = load_classifier(self.model_path, map_location="cpu")
        return self._model

    def spec(self) -> dict[str, Any]:
        """The saved classifier's spec (``load_classifier``'s second value)."""
        if self._spec is None:
            self._spec = load_classifier(self.model_path, map_location="cpu")[1]
        return self._spec


@dataclass(frozen=True)
class Bench:
    """Where the cost columns are measured: the device, the images (NHWC uint8) and the
    latency budget of the whole table (seconds), shared by its distinct networks."""

    device: torch.device
    images: np.ndarray
    budget_s: float = 5.0


RowPart = Callable[[StrategyRun, Bench], dict[str, Any]]
TablePart = Callable[[list[dict[str, Any]]], None]


@dataclass(frozen=True)
class ExtraColumns:
    """Columns measured by code this package may not import (petsml.export's ONNX columns are
    composed one layer up, by :mod:`petsml.compare_onnx`): a row part (None: not measured, the
    cells stay empty), and how they were measured, written as ``report[section]``, whose
    ``"what"`` sentence goes under the table. A row part may return ``"notes"`` (a list of
    sentences, e.g. why a model has empty cells); they are gathered in the row's ``notes``."""

    section: str
    about: dict[str, Any]
    part: RowPart | None = None


# --------------------------------------------------------------------------- one row


def evaluated(run: StrategyRun, bench: Bench) -> dict[str, Any]:
    """Quality and training time as evaluate recorded them; the block an early-block strategy
    read (so the advice is judged against the configuration that ran)."""
    cells = {key: run.metrics.get(key) for key in METRIC_KEYS}
    block = (run.summary.get("params") or {}).get("block")
    return {**cells, "block": block} if block is not None else cells


def size(run: StrategyRun, bench: Bench) -> dict[str, Any]:
    """What shipping the model weighs: parameters and the saved file."""
    return {
        "parameters": int(sum(p.numel() for p in run.model().parameters())),
        "model_mb": round(run.model_path.stat().st_size / 1e6, 3),
    }


ROW_PARTS: list[RowPart] = [evaluated, size]


def build_row(
    run: StrategyRun,
    bench: Bench,
    parts: Sequence[RowPart] = ROW_PARTS,
    latency_ms: dict[int, float] | None = None,
) -> dict:
    row: dict[str, Any] = {"strategy": run.strategy}
    for b, ms in (latency_ms or {}).items():
        row[f"latency_ms_batch{b}"] = round(ms, 4)
    for part in parts:
        cells = dict(part(run, bench))
        notes = cells.pop("notes", None) or []
        row.update(cells)
        if notes:
            row["notes"] = [*row.get("notes", []), *notes]
    run._model = None  # one model in memory at a time
    return row


# --------------------------------------------------------------------------- the whole table


def transfer_gain(rows: list[dict[str, Any]]) -> None:
    """Test accuracy over the baseline's (the registry's ``baseline`` row: ``scratch``), in
    place; None everywhere when it did not run."""
    baseline = strategies.baseline()
    base = next((r for r in rows if r["strategy"] == baseline), None)
    base_acc = finite_number(base.get("test_accuracy")) if base else None
    for row in rows:
        acc = finite_number(row.get("test_accuracy"))
        row["transfer_gain"] = (
            None if base_acc is None or acc is None or row is base else round(acc - base_acc, 6)
        )


def rank(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Best validation accuracy first; ties and rows without one by name. Sets ``rank``."""

    def key(row: Mapping[str, Any]) -> tuple:
        val = finite_number(row.get(RANKED_BY))
        return (val is None, -(val or 0.0), row["strategy"])

    ranked = sorted(rows, key=key)
    for position, row in enumerate(ranked, 1):
        row["rank"] = position
    return ranked


TABLE_PARTS: list[TablePart] = [transfer_gain]


def pareto_front(
    rows: Sequence[Mapping[str, Any]],
    accuracy: str = FRONT_ACCURACY,
    cost: str = FRONT_LATENCY,
) -> list[str]:
    """Strategies no other beats on both axes (at least as accurate and at least as fast, one
    strictly), fastest first. Rows missing either number are left out."""
    pairs = (
        (row["strategy"], finite_number(row.get(accuracy)), finite_number(row.get(cost)))
        for row in rows
    )
    points = [(name, a, c) for name, a, c in pairs if a is not None and c is not None]
    front = [
        (name, a, c)
        for name, a, c in points
        if not any(
            a2 >= a and c2 <= c and (a2 > a or c2 < c) for other, a2, c2 in points if other != name
        )
    ]
    return [name for name, _, c in sorted(front, key=lambda p: (p[2], p[0]))]


# --------------------------------------------------------------------------- near-duplicates


def near_duplicate_check(root: Path, strategies_run: Sequence[str]) -> ExtraColumns:
    """How many test photos have a near-duplicate in train (the data_issues stage's report), and
    each strategy's test accuracy without them (from evaluate's predictions.csv): the row part
    adds ``test_accuracy_without_duplicates``, the sentence goes under the table."""
    import pandas as pd

    from petsml.io import read_json

    path = root / paths.DATA_ISSUES_JSON
    if not path.is_file():
        missing = f"Near-duplicates: not checked ({path} is missing: run `dvc repro data_issues`)."
        return ExtraColumns("near_duplicates", {"checked": False, "what": missing})
    leaked = set(read_json(path)["near_duplicates"]["test_with_train_duplicate"])
    accuracy, kept = {}, 0
    for strategy in strategies_run:
        if (predictions := root / paths.predictions_csv(strategy)).is_file():
            frame = pd.read_csv(predictions, dtype={"image_id": str, "correct": str})
            rest = frame.loc[~frame["image_id"].isin(leaked), "correct"].str.lower() == "true"
            kept = len(rest)
            accuracy[strategy] = round(float(rest.mean()), 6) if kept else None
    each = ", ".join(f"`{s}` {a:.3f}" for s, a in accuracy.items() if a is not None) or "none"
    what = f"Near-duplicates: {len(leaked)} test photo(s) have a near-duplicate in train " + (
        f"({paths.DATA_ISSUES_MD}); test accuracy on the {kept} other test photos: {each}."
        if leaked else f"({paths.DATA_ISSUES_MD}): the test accuracy stands as it is."
    )  # fmt: skip

    def part(run: StrategyRun, bench: Bench) -> dict[str, Any]:
        return {"test_accuracy_without_duplicates": accuracy.get(run.strategy)}

    about = {"checked": True, "test_with_train_duplicate": sorted(leaked), "what": what}
    return ExtraColumns("near_duplicates", about, part)


# --------------------------------------------------------------------------- the stage


def strategy_runs(params: Params, root: Path) -> list[StrategyRun]:
    """Every strategy of ``train.strategies`` as evaluate and train left it; a clear error
    naming the file when one is missing."""
    metrics = read_metrics(root)
    runs = []
    for strategy in params.train.strategies:
        if strategy not in metrics:
            raise ResultsError(
                f"{root / paths.METRICS}: no entry for {strategy!r} (train.strategies lists it). "
                "Run `dvc repro evaluate`."
            )
        model_dir = root / paths.model_dir(strategy)
        if not model_file(model_dir).is_file():
            raise ResultsError(
                f"{model_file(model_dir)}: missing. Run `dvc repro train@{strategy}`."
            )
        summary = read_summary(model_dir, {})
        runs.append(StrategyRun(strategy, dict(metrics[strategy]), summary, model_file(model_dir)))
    return runs


def build_report(
    runs: Sequence[StrategyRun],
    bench: Bench,
    advice: Mapping[str, Any] | None,
    extras: Sequence[ExtraColumns] = (),
) -> dict[str, Any]:
    """The comparison.json contract (:mod:`petsml.evaluation.results`)."""
    parts = [*ROW_PARTS, *(extra.part for extra in extras if extra.part is not None)]
    measured, networks = torch_latency.measure_networks(
        {run.strategy: run.model() for run in runs}, bench.images, bench.device, bench.budget_s
    )
    rows = [build_row(run, bench, parts, measured[run.strategy]) for run in runs]
    for part in TABLE_PARTS:
        part(rows)
    ranked = rank(rows)
    front = pareto_front(ranked)
    for row in ranked:
        row["pareto"] = row["strategy"] in front
    notes = [str(extra.about["what"]) for extra in extras if extra.about.get("what")]
    notes += [f"`{row['strategy']}`: {note}" for row in ranked for note in row.get("notes", [])]
    return {
        "version": COMPARISON_VERSION,
        "ranked_by": RANKED_BY,
        "device": str(bench.device),
        "latency": {
            "batch_sizes": list(torch_latency.BATCH_SIZES),
            "budget_s": bench.budget_s,
            "networks": networks,
            "what": "median seconds of a timed batch / batch size; uint8 images in, "
            "preprocessing and the fused forward pass on the device; each distinct network "
            "timed once (strategies listed together share it) within one budget",
        },
        "baseline": strategies.baseline(),
        "rows": ranked,
        "pareto": {"accuracy": FRONT_ACCURACY, "latency": FRONT_LATENCY, "front": front},
        "advice": advice_verdict(advice, ranked),
        **{extra.section: dict(extra.about) for extra in extras},
        "notes": notes,
    }


def read_advice(root: Path) -> dict[str, Any] | None:
    from petsml.io import read_json

    path = root / paths.ADVICE
    try:
        return read_json(path) if path.is_file() else None
    except (OSError, ValueError):
        log.warning("%s: unreadable; the comparison does not check the advice", path)
        return None


def compare_all(
    params: Params,
    root: str | Path = ".",
    device: torch.device | None = None,
    extras: Sequence[ExtraColumns] = (),
) -> dict:
    """The whole compare stage: measure, build, write every comparison file; returns the JSON.
    ``extras``: columns measured by code above this package (the stage passes the ONNX ones)."""
    from petsml.evaluation.comparison_render import write_comparison

    root = Path(root)
    runs = strategy_runs(params, root)
    device = device or pick_device(params.train.device)
    size = DecodedImages.open(root / paths.DECODED).size
    biggest = max(torch_latency.BATCH_SIZES)
    images = torch_latency.timing_images(biggest, size, seed=params.train.seed)
    bench = Bench(device, images, params.compare.latency_budget_s)
    extras = [*extras, near_duplicate_check(root, [run.strategy for run in runs])]
    report = build_report(runs, bench, read_advice(root), extras)
    write_comparison(report, root)
    for row in report["rows"]:
        log.info(
            "%d. %s: val %s, %.2f ms/image at batch 1 on %s",
            row["rank"], row["strategy"], row.get(RANKED_BY), row.get(FRONT_LATENCY) or math.nan,
            device,
        )  # fmt: skip
    log.info("advice %s", report["advice"]["statement"])
    return report
