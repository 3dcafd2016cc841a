"""The comparison report's ONNX columns: each strategy's model exported and measured.

``petsml.evaluation`` (the report) and ``petsml.export`` (the export) are siblings in one layer
of the import contract and may not import each other; this module, one layer above both,
composes them for the compare stage: :func:`onnx_columns` turns ``params.compare`` into an
:class:`~petsml.evaluation.comparison.ExtraColumns` whose row part exports the strategy's
model into a temporary folder (deleted at once: the report keeps the numbers, ``pets export``
is how a model is shipped), checks it against PyTorch on the test split and times it at batch 1
with ONNX Runtime on CPU (:func:`petsml.export.measure.export_model`).

A model that cannot be exported or measured (an operator ONNX lacks, a parity failure, a
missing split) gets empty cells and a note naming why: the report is about choosing a
strategy, so one un-shippable model is an answer, not a failed stage.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from petsml import paths
from petsml.evaluation.comparison import Bench, ExtraColumns, StrategyRun
from petsml.evaluation.results import ONNX_KEYS
from petsml.sections import CompareParams

log = logging.getLogger(__name__)

SECTION = "onnx"  # report["onnx"]: how the ONNX columns were measured
OFF = (
    "ONNX columns not measured: `compare.onnx` is false in params.yaml (`pets export` "
    "measures one registered model)."
)


def _reason(error: Exception) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text}" if text else repr(error)


def onnx_columns(settings: CompareParams, root: str | Path = ".") -> ExtraColumns:
    """The ONNX columns as ``settings`` (``params.compare``) asks, measured on ``root``'s
    decoded cache and splits; an :class:`ExtraColumns` with no row part when they are off."""
    if not settings.onnx:
        return ExtraColumns(SECTION, {"measured": False, "what": OFF})
    root = Path(root)
    int8 = settings.onnx_int8
    about = {
        "measured": True,
        "int8": int8,
        "calibration_photos": settings.calibration if int8 else None,
        "latency_runs": settings.latency_runs,
        "what": (
            "ONNX columns: each model exported to ONNX fp32 (opset 17)"
            + (
                f" and int8 (static, calibrated on up to {settings.calibration} train photos)"
                if int8
                else ""
            )
            + f", agreement and accuracy on the test split, batch-1 median of "
            f"{settings.latency_runs} calls with ONNX Runtime on CPU; exports are not kept "
            "(`pets export` ships one)"
            + ("." if int8 else "; int8 columns off (`compare.onnx_int8: false`).")
        ),
    }
    cache: dict[tuple, Any] = {}  # the test split and calibration photos, per decode size/task

    def onnx_part(run: StrategyRun, bench: Bench) -> dict[str, Any]:
        from petsml.export.contract import Contract
        from petsml.export.measure import export_model, load_data, table_columns

        empty: dict[str, Any] = dict.fromkeys(ONNX_KEYS)
        try:
            contract = Contract.for_model(run.spec())
            key = (contract.resize_short_side, contract.task)
            if key not in cache:
                cache[key] = load_data(contract, root / paths.DECODED, root / paths.SPLITS,
                                       calibration=settings.calibration)  # fmt: skip
            with tempfile.TemporaryDirectory(prefix="pets-compare-onnx-") as tmp:
                report = export_model(run.model(), run.spec(), Path(tmp) / "export", cache[key],
                                      int8=int8, latency_runs=settings.latency_runs,
                                      source={"strategy": run.strategy})  # fmt: skip
        except Exception as error:  # any reason is an answer for this row, not a failed stage
            log.warning("%s: ONNX columns empty: %s", run.strategy, _reason(error))
            return {**empty, "notes": [f"ONNX columns empty: {_reason(error)}"]}
        found = table_columns(report)
        cells = {k: None if found.get(k) is None else round(float(found[k]), 4) for k in ONNX_KEYS}
        return {**empty, **cells}

    return ExtraColumns(SECTION, about, onnx_part)
