"""Export a classifier for phones and edge boxes, and measure what it costs: the one recipe.

:func:`export_and_measure` takes a model folder (``models/<strategy>/``, the contract of
:mod:`petsml.models.model_dir`) or a ``model.pt`` and writes, all at once (a temp folder renamed
at the end, so a failure leaves nothing behind)::

    out/model.onnx            fp32 graph: normalised NCHW float -> logits (opset 17)
    out/model.int8.onnx       int8 static quantization (with int8=True)
    out/preprocessing.json    the pre-processing contract (petsml.export.contract)
    out/export_report.json    parity on the test split, size and batch-1 latency, machine

Every strategy ships the same kind of model (backbone + linear head; the frozen-feature
strategies' sklearn heads are folded into that linear layer when they train), so every strategy
exports the same way. The fp32 graph must agree with PyTorch on the test split (top-1 >= 99.5 %
and logits within tolerance) or nothing is written. No MLflow here: the registry side is
:mod:`petsml.tracking.edge_export`.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from petsml import paths
from petsml.data.decode import DecodedImages
from petsml.data.split import load_split
from petsml.export.contract import CONTRACT_FILE, Contract
from petsml.export.onnx_export import OPSET, ExportError, export_onnx, session
from petsml.export.onnx_latency import latency_ms, machine
from petsml.export.out_dir import REPORT_FILE, check_out_dir, make_readable
from petsml.export.parity import (
    INT8_TARGET_DROP,
    MIN_AGREEMENT,
    agreement,
    check_fp32,
    logit_tolerance,
    onnx_logits,
    torch_logits,
)
from petsml.io import atomic_dir, read_json, write_json
from petsml.models.classifier import Classifier, load_classifier
from petsml.models.model_dir import read_model_dir

log = logging.getLogger(__name__)

FP32_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
CALIBRATION = 300  # training photos the int8 activation ranges are calibrated on
LATENCY_RUNS = 50


@dataclass(frozen=True)
class EvalData:
    """What an export is measured on: the test split and the int8 calibration photos."""

    test_u8: np.ndarray  # (N, S, S, 3) decoded test photos
    test_labels: np.ndarray
    calibration_u8: np.ndarray  # (M, S, S, 3) training photos


def load_data(
    contract: Contract,
    decoded_dir: str | Path = paths.DECODED,
    splits_dir: str | Path = paths.SPLITS,
    *,
    calibration: int = CALIBRATION,
    seed: int = 0,
) -> EvalData:
    """The test split and up to ``calibration`` seeded training photos from the decoded cache."""
    decoded = DecodedImages.open(decoded_dir)
    if decoded.size != contract.resize_short_side:
        raise ExportError(
            f"{decoded_dir} holds {decoded.size}px images but the model was trained on "
            f"decode.size={contract.resize_short_side}: set decode.size to "
            f"{contract.resize_short_side} in params.yaml and run `dvc repro decode`."
        )
    frames = {}
    for split in ("test", "train"):
        csv = Path(splits_dir) / f"{split}.csv"
        if not csv.is_file():
            raise ExportError(f"{csv}: missing; run `dvc repro split` first.")
        frames[split] = load_split(csv, contract.task)
    test = frames["test"]
    if test.empty:
        raise ExportError(f"{Path(splits_dir) / 'test.csv'} is empty: nothing to measure on.")
    train_ids = frames["train"]["image_id"].to_numpy()
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(train_ids), size=min(calibration, len(train_ids)), replace=False)
    return EvalData(
        test_u8=decoded.take(test["image_id"].tolist()),
        test_labels=test["label"].to_numpy(),
        calibration_u8=decoded.take(train_ids[np.sort(picked)].tolist()),
    )


def load_model(source: str | Path) -> tuple[Classifier, dict[str, Any], Path]:
    """A model folder (``models/<strategy>/``) or a ``model.pt`` -> (classifier, spec, file)."""
    source = Path(source)
    if source.is_dir():
        found = read_model_dir(source)
        return found.model, found.spec, source / "model.pt"
    model, spec = load_classifier(source)
    return model, spec, source


def _state_bytes(model: torch.nn.Module) -> int:
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.tell()


def _versions() -> dict[str, str]:
    found = {}
    for name in ("torch", "onnx", "onnxruntime"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "missing"
    return found


def _row(name: str, precision: str, size: int, timing: dict, accuracy: float | None) -> dict:
    return {"model": name, "precision": precision, "bytes": int(size), **timing,
            "test_accuracy": accuracy}  # fmt: skip


def export_model(
    model: Classifier,
    spec: dict[str, Any],
    out_dir: str | Path,
    data: EvalData,
    *,
    int8: bool = False,
    latency_runs: int = LATENCY_RUNS,
    threads: int | None = None,
    source: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Export ``model`` into ``out_dir`` (replaced atomically), measured on ``data``; returns
    the report also written as ``export_report.json``. Raises ExportError/ParityError, leaving
    ``out_dir`` untouched, when the model cannot be exported or does not match PyTorch."""
    out_dir = check_out_dir(out_dir)
    contract = Contract.for_model(spec)
    threads = int(threads or torch.get_num_threads())
    model = model.eval().float().cpu()
    with atomic_dir(out_dir) as tmp:
        contract.write(tmp)
        fp32_path = export_onnx(model, tmp / FP32_FILE, contract)
        fp32 = session(fp32_path, threads)
        reference = torch_logits(model, data.test_u8)
        found32 = agreement(reference, onnx_logits(fp32, data.test_u8, contract), data.test_labels)
        check_fp32(found32, reference)
        parity: dict[str, Any] = {
            "split": "test",
            "n": found32.n,
            "pytorch_fp32_accuracy": found32.reference_accuracy,
            "onnx_fp32": found32.as_dict(),
            "min_agreement": MIN_AGREEMENT,
            "logit_tolerance": logit_tolerance(reference),
        }
        int8_session = None
        if int8:
            from petsml.export.quantize import calibration_set, quantize_int8

            int8_path = quantize_int8(fp32_path, tmp / INT8_FILE, data.calibration_u8, contract)
            int8_session = session(int8_path, threads)
            found8 = agreement(
                reference, onnx_logits(int8_session, data.test_u8, contract), data.test_labels
            )
            drop = found8.accuracy_drop_points
            parity["onnx_int8"] = {
                **found8.as_dict(),
                "target_drop_points": INT8_TARGET_DROP,
                "within_target": drop is not None and drop <= INT8_TARGET_DROP,
                "calibration_photos": len(calibration_set(data.calibration_u8)),
            }
            if drop is not None and drop > INT8_TARGET_DROP:
                log.warning("int8 loses %.2f accuracy points (target <= %.1f)", drop,
                            INT8_TARGET_DROP)  # fmt: skip
        table = _latency_table(model, contract, data, fp32, int8_session, tmp, threads,
                               latency_runs, parity)  # fmt: skip
        report = {
            "format": "onnx",
            "opset": OPSET,
            "exporter": "torch.onnx.export (TorchScript, dynamo=False)",
            "versions": _versions(),
            "source": {**(source or {}), **contract.extra, "task": contract.task},
            "files": {"fp32": FP32_FILE, "contract": CONTRACT_FILE}
            | ({"int8": INT8_FILE} if int8 else {}),
            "parity": parity,
            "table": table,
            "machine": machine(threads),
        }
        write_json(tmp / REPORT_FILE, report)
        make_readable(tmp)
    log.info("exported to %s", out_dir)
    return report


def _latency_table(
    model, contract, data, fp32, int8_session, folder, threads, runs, parity
) -> list[dict]:
    """Size, batch-1 p50/p95 latency and test accuracy of PyTorch fp32, ONNX fp32, ONNX int8."""
    from petsml.data.tensors import to_input
    from petsml.export.contract import prepare

    one_u8 = data.test_u8[:1]
    prep = model.backbone.preprocessing
    x_torch = to_input(torch.from_numpy(np.ascontiguousarray(one_u8)), list(prep.mean),
                       list(prep.std), size=int(prep.input_size))  # fmt: skip
    x_onnx = {contract.input_name: prepare(one_u8, contract)}
    calls = {"pytorch fp32": lambda: model(x_torch), "onnx fp32": lambda: fp32.run(None, x_onnx)}
    if int8_session is not None:
        calls["onnx int8"] = lambda: int8_session.run(None, x_onnx)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            timing = latency_ms(calls, runs=runs)
    finally:
        torch.set_num_threads(before)
    rows = [
        _row("pytorch", "fp32", _state_bytes(model), timing["pytorch fp32"],
             parity["pytorch_fp32_accuracy"]),
        _row("onnx", "fp32", (folder / FP32_FILE).stat().st_size, timing["onnx fp32"],
             parity["onnx_fp32"]["accuracy"]),
    ]  # fmt: skip
    if int8_session is not None:
        rows.append(
            _row("onnx", "int8", (folder / INT8_FILE).stat().st_size, timing["onnx int8"],
                 parity["onnx_int8"]["accuracy"])
        )  # fmt: skip
    return rows


def export_and_measure(
    model_dir: str | Path,
    out_dir: str | Path,
    *,
    int8: bool = True,
    decoded_dir: str | Path = paths.DECODED,
    splits_dir: str | Path = paths.SPLITS,
    calibration: int = CALIBRATION,
    latency_runs: int = LATENCY_RUNS,
    threads: int | None = None,
    source: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Export one model folder (or model.pt) to ``out_dir`` and measure it; returns the report.

    For a comparison table: ``report["table"]`` has one row per model (PyTorch fp32, ONNX fp32,
    ONNX int8) with ``bytes``, ``p50_ms``, ``p95_ms`` and ``test_accuracy``;
    :func:`table_columns` flattens it into one row of columns.
    """
    check_out_dir(out_dir)
    model, spec, model_pt = load_model(model_dir)
    data = load_data(Contract.for_model(spec), decoded_dir, splits_dir, calibration=calibration)
    where = {"model_file": str(model_pt)} | (source or {})
    return export_model(model, spec, out_dir, data, int8=int8, latency_runs=latency_runs,
                        threads=threads, source=where)  # fmt: skip


def table_columns(report: dict[str, Any]) -> dict[str, Any]:
    """One flat row for a strategy comparison: ``onnx_fp32_p50_ms``, ``pytorch_fp32_mb``, ..."""
    columns: dict[str, Any] = {}
    for row in report["table"]:
        key = f"{row['model']}_{row['precision']}"
        columns[f"{key}_mb"] = row["bytes"] / 1e6
        columns[f"{key}_p50_ms"] = row["p50_ms"]
        columns[f"{key}_p95_ms"] = row["p95_ms"]
        columns[f"{key}_accuracy"] = row["test_accuracy"]
    int8 = report["parity"].get("onnx_int8")
    if int8:
        columns["int8_accuracy_drop_points"] = int8["accuracy_drop_points"]
    columns["onnx_fp32_top1_agreement"] = report["parity"]["onnx_fp32"]["top1_agreement"]
    return columns


def read_report(out_dir: str | Path) -> dict[str, Any]:
    """An export folder's ``export_report.json``."""
    path = Path(out_dir) / REPORT_FILE
    if not path.is_file():
        raise ExportError(f"{path}: missing; run `pets export` first.")
    return read_json(path)


def format_report(report: dict[str, Any]) -> str:
    """The report as the few lines ``pets export`` and ``benchmarks/edge.py`` print."""
    parity, machine_ = report["parity"], report["machine"]
    fp32 = parity["onnx_fp32"]
    lines = [
        f"parity on the {parity['split']} split ({parity['n']} photos): ONNX fp32 top-1 "
        f"agreement {fp32['top1_agreement']:.2%}, "
        f"max |logit diff| {fp32['max_abs_logit_diff']:.2e}",
    ]
    int8 = parity.get("onnx_int8")
    if int8:
        drop = int8["accuracy_drop_points"]
        verdict = "within" if int8["within_target"] else "OVER"
        lines.append(
            f"int8: top-1 agreement {int8['top1_agreement']:.2%}, accuracy drop {drop:+.2f} "
            f"points ({verdict} the {int8['target_drop_points']:g}-point target; calibrated on "
            f"{int8['calibration_photos']} train photos)"
        )
    lines.append(
        f"batch 1 on {machine_['cpu']} [{' '.join(machine_['flags'])}], {machine_['threads']} "
        f"threads, load {machine_['load_average']}:"
    )
    lines.append(f"  {'model':<14}{'size MB':>9}{'p50 ms':>9}{'p95 ms':>9}{'test acc':>10}")
    for row in report["table"]:
        acc = "-" if row["test_accuracy"] is None else f"{row['test_accuracy']:.4f}"
        lines.append(
            f"  {row['model'] + ' ' + row['precision']:<14}{row['bytes'] / 1e6:>9.2f}"
            f"{row['p50_ms']:>9.2f}{row['p95_ms']:>9.2f}{acc:>10}"
        )
    return "\n".join(lines)
