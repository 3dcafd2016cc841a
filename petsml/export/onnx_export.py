"""A classifier to an ONNX file, and ONNX Runtime sessions to run one.

Exporter, chosen on purpose: torch 2.14's ``torch.onnx.export`` defaults to the dynamo
(``torch.export``) exporter, which needs ``onnxscript`` (+ ``onnx-ir``), emits opset 18 or newer
only (its down-conversion to 17 failed on timm's EfficientNet here) and took 9-14 s for the
tiny test network. The TorchScript exporter (``dynamo=False``) ships inside torch, exports the
same graph in ~1 s with identical outputs (max |diff| 5e-8 on the test network) and writes
opset 17, which ONNX Runtime >= 1.14 (mobile builds included), TensorRT >= 8.6 and OpenVINO run.
It is deprecated in favour of dynamo but present in the pinned torch (2.14.1); its deprecation
warning is silenced here and nowhere else. Switching is one argument of :func:`export_onnx`.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch
from torch import nn

from petsml.errors import PetsError
from petsml.export.contract import Contract

log = logging.getLogger(__name__)

OPSET = 17


class ExportError(PetsError):
    """A model that cannot be exported (or whose export cannot be loaded back)."""


def export_onnx(
    model: nn.Module, path: str | Path, contract: Contract, *, opset: int = OPSET
) -> Path:
    """Write ``model`` (normalised NCHW float -> logits) to ``path`` with a dynamic batch axis.

    The graph's input and output are named as the contract says. Raises :class:`ExportError`
    naming the reason when the exporter rejects the model or ONNX's checker rejects the result.
    """
    import onnx

    if contract.layout != "NCHW":
        raise ExportError(f"the project's classifiers take NCHW input, not {contract.layout}")
    path = Path(path)
    model = model.eval().float().cpu()
    example = torch.zeros(1, 3, contract.input_size, contract.input_size)
    axes = {contract.input_name: {0: "batch"}, contract.output_name: {0: "batch"}}
    try:
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            torch.onnx.export(
                model,
                (example,),
                str(path),
                dynamo=False,
                opset_version=opset,
                input_names=[contract.input_name],
                output_names=[contract.output_name],
                dynamic_axes=axes,
                do_constant_folding=True,
            )
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as error:  # the exporter raises many types; the reason is in the message
        reason = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        raise ExportError(
            f"this model cannot be exported to ONNX opset {opset}: {type(error).__name__}: {reason}"
        ) from error
    log.info("exported %s (opset %d, %d bytes)", path, opset, path.stat().st_size)
    return path


def session(path: str | Path, threads: int | None = None):
    """An ONNX Runtime CPU session for ``path`` (``threads`` intra-op threads; None: ORT's)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: ORT warns about unused initializers
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # ORT raises its own Fail/InvalidGraph types
        raise ExportError(f"{path}: ONNX Runtime cannot load it: {error}") from error
