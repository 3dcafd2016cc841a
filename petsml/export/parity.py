"""Does the exported graph answer like the PyTorch model? Measured on the test split.

The reference is the PyTorch classifier fed by the project's own pre-processing
(:func:`petsml.data.tensors.to_input` with the backbone's normalisation), the path evaluation
and the pyfunc take. The ONNX side is fed through the exported contract
(:func:`petsml.export.contract.prepare`) alone, so a wrong contract (swapped channel order, a
wrong mean, a wrong crop) shows up as disagreement here rather than on a phone.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from petsml.errors import PetsError
from petsml.export.contract import Contract, prepare

MIN_AGREEMENT = 0.995  # fp32 ONNX vs PyTorch, top-1 on the test split
LOGIT_TOLERANCE = 1e-3  # fp32 max |logit diff|, relative to max(1, max |PyTorch logit|)
INT8_TARGET_DROP = 1.0  # accuracy points int8 may lose against PyTorch fp32 (reported)
BATCH = 64


class ParityError(PetsError):
    """The exported model does not answer like the PyTorch model it came from."""


@dataclass(frozen=True)
class Agreement:
    """One exported model against the PyTorch reference on the same images."""

    n: int
    top1_agreement: float
    max_abs_logit_diff: float
    accuracy: float | None  # None without labels
    reference_accuracy: float | None

    @property
    def accuracy_drop_points(self) -> float | None:
        if self.accuracy is None or self.reference_accuracy is None:
            return None
        return 100.0 * (self.reference_accuracy - self.accuracy)

    def as_dict(self) -> dict:
        return {**asdict(self), "accuracy_drop_points": self.accuracy_drop_points}


def torch_logits(model: torch.nn.Module, images_u8: np.ndarray, batch: int = BATCH) -> np.ndarray:
    """The PyTorch classifier's fp32 logits through the project's pre-processing."""
    from petsml.data.tensors import to_input

    prep = model.backbone.preprocessing
    model = model.eval().float()
    out = []
    with torch.inference_mode():
        for start in range(0, len(images_u8), batch):
            chunk = torch.from_numpy(np.array(images_u8[start : start + batch]))
            x = to_input(chunk, list(prep.mean), list(prep.std), size=int(prep.input_size))
            out.append(model(x).float().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def onnx_logits(
    session, images_u8: np.ndarray, contract: Contract, batch: int = BATCH
) -> np.ndarray:
    """An ONNX Runtime session's logits, inputs prepared through ``contract`` only."""
    out = []
    for start in range(0, len(images_u8), batch):
        x = prepare(images_u8[start : start + batch], contract)
        out.append(session.run([contract.output_name], {contract.input_name: x})[0])
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def agreement(
    reference: np.ndarray, logits: np.ndarray, labels: np.ndarray | None = None
) -> Agreement:
    """Top-1 agreement, max |logit diff| and (with labels) both accuracies."""
    if reference.shape != logits.shape or len(reference) == 0:
        raise ParityError(
            f"logits of shape {logits.shape} cannot be compared with the PyTorch model's "
            f"{reference.shape}"
        )
    ref_top, top = reference.argmax(1), logits.argmax(1)
    acc = ref_acc = None
    if labels is not None:
        labels = np.asarray(labels)
        acc, ref_acc = float((top == labels).mean()), float((ref_top == labels).mean())
    return Agreement(
        n=len(reference),
        top1_agreement=float((ref_top == top).mean()),
        max_abs_logit_diff=float(np.abs(reference - logits).max()),
        accuracy=acc,
        reference_accuracy=ref_acc,
    )


def logit_tolerance(reference: np.ndarray) -> float:
    return LOGIT_TOLERANCE * max(1.0, float(np.abs(reference).max()))


def check_fp32(found: Agreement, reference: np.ndarray, what: str = "ONNX fp32") -> None:
    """Raise :class:`ParityError` unless ``found`` matches PyTorch (agreement and logits)."""
    tolerance = logit_tolerance(reference)
    problems = []
    if found.top1_agreement < MIN_AGREEMENT:
        problems.append(
            f"top-1 agreement {found.top1_agreement:.4f} < {MIN_AGREEMENT} on {found.n} images"
        )
    if found.max_abs_logit_diff > tolerance:
        problems.append(f"max |logit diff| {found.max_abs_logit_diff:.3g} > {tolerance:.3g}")
    if problems:
        raise ParityError(
            f"{what} does not match the PyTorch model: {'; '.join(problems)}. The graph or its "
            "pre-processing contract (preprocessing.json: crop, mean/std, channel order) is "
            "wrong; nothing was written."
        )
