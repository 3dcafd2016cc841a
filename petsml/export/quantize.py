"""int8 static quantization of an exported model with ONNX Runtime, calibrated on real photos.

Static (not dynamic) quantization because the network is convolutional: dynamic quantization
only covers MatMul/Gemm weights, so the convolutions would stay fp32. Activation ranges come
from a few hundred training photos of the decoded cache, prepared through the contract (the
same tensors the model sees when served). QDQ format with per-channel int8 weights and uint8
activations is what ONNX Runtime's CPU kernels (and most mobile/NPU runtimes) accelerate.
MinMax calibration: the histogram methods (``Percentile``, ``Entropy``; ``method=``) keep every
activation of every calibration photo, and on the 2-core project machine a 208-photo
Percentile run of Lite0 did not finish (its process died) where MinMax took about a minute.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from petsml.export.contract import Contract, prepare
from petsml.export.onnx_export import ExportError

log = logging.getLogger(__name__)

CALIBRATION_BATCH = 16


def calibration_set(images_u8: np.ndarray, batch: int = CALIBRATION_BATCH) -> np.ndarray:
    """The photos calibration uses: whole batches only (ORT's histogram calibrators stack the
    batches, so a short last one fails); all of them when there are fewer than one batch."""
    batch = max(1, min(batch, len(images_u8)))
    return images_u8[: len(images_u8) // batch * batch]


class _Reader(CalibrationDataReader):
    """ONNX Runtime's calibration input: the photos, prepared through the contract, a batch at
    a time."""

    def __init__(self, images_u8: np.ndarray, contract: Contract, batch: int) -> None:
        self.images, self.contract, self.start = images_u8, contract, 0
        self.batch = max(1, min(batch, len(images_u8)))

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.start >= len(self.images):
            return None
        chunk = self.images[self.start : self.start + self.batch]
        self.start += self.batch
        return {self.contract.input_name: prepare(chunk, self.contract)}

    def rewind(self) -> None:
        self.start = 0


def quantize_int8(
    fp32_path: str | Path,
    out_path: str | Path,
    calibration_u8: np.ndarray,
    contract: Contract,
    *,
    batch: int = CALIBRATION_BATCH,
    method: str = "MinMax",
) -> Path:
    """Write the int8 (QDQ) version of ``fp32_path`` to ``out_path``; returns ``out_path``."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if len(calibration_u8) == 0:
        raise ExportError("int8 quantization needs calibration photos; the train split has none")
    calibration_u8 = calibration_set(calibration_u8, batch)
    reader = _Reader(calibration_u8, contract, batch)
    out_path = Path(out_path)
    with tempfile.TemporaryDirectory(prefix="petsml-quant-") as tmp:
        prepped = Path(tmp) / "prepped.onnx"
        try:
            # shape inference + graph optimisation (BatchNorm folded into Conv) first, as ORT
            # recommends: fewer, better-placed quantization nodes
            quant_pre_process(str(fp32_path), str(prepped), skip_symbolic_shape=True)
            quantize_static(
                str(prepped),
                str(Path(tmp) / "int8.onnx"),
                reader,
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                weight_type=QuantType.QInt8,
                activation_type=QuantType.QUInt8,
                calibrate_method=getattr(CalibrationMethod, method),
            )
        except Exception as error:
            raise ExportError(
                f"int8 quantization failed: {type(error).__name__}: {error}"
            ) from error
        shutil.move(str(Path(tmp) / "int8.onnx"), out_path)
    log.info("int8 model %s calibrated on %d photos", out_path, len(calibration_u8))
    return out_path
