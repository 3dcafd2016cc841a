"""The pre-processing contract of an exported model: the one home of "what goes into the graph".

An ONNX file holds only the network: it maps normalised float NCHW to logits. Whoever serves it
(a phone app, an edge box, :mod:`petsml.export.parity`) must turn a photo into that tensor
exactly as the project does (:func:`petsml.data.decode.load_rgb`, then
:func:`petsml.data.tensors.to_input`), so the export writes every step beside the ``.onnx`` as
``preprocessing.json`` (its ``steps`` list says them in words; the fields below are their
parameters). With S = ``resize_short_side``:

1. decode the file with Pillow. A JPEG is decoded with DCT scaling first (``jpeg_draft``:
   Pillow's ``img.draft("RGB", (S, S))``, i.e. libjpeg's scale 1/a with a the largest of 8, 4,
   2, 1 not above min(width // S, height // S), giving ceil(width / a) x ceil(height / a));
   16/32-bit grey is rescaled to 8 bits (``v * 255 / 65535``, or ``/ 255`` when no value
   exceeds 255, rounded half up); then Pillow's ``convert("RGB")``;
2. resize to (max(S, round(width * S / short)), max(S, round(height * S / short))) with
   Python's round (half to even), Pillow's bilinear filter (antialiased when shrinking) with
   ``reducing_gap`` (Pillow first box-reduces by int(ratio / reducing_gap) per axis when that is
   above 1), then centre-crop S x S at offsets ((w - S) // 2, (h - S) // 2);
3. centre-crop ``input_size`` x ``input_size`` the same way;
4. scale to [0, 1] (``scale`` = 1/255), subtract ``mean`` and divide by ``std`` per channel, in
   ``channel_order`` (RGB);
5. lay out as ``layout`` (NCHW) float32 and feed it as input ``input_name``; the output
   ``output_name`` holds one logit per entry of ``class_names`` (softmax for probabilities).

Version 1 files (no ``jpeg_draft``/``reducing_gap``) left steps 1-2's details unstated: a
decoder without DCT scaling and the reducing gap agreed with ``pets predict`` on 19 of 20 real
photos. :func:`prepare` runs steps 3-5 on uint8 images with numpy alone, reading nothing but the
contract, so a parity check through it fails when the contract is wrong (e.g. BGR written for
an RGB model); ``tests/test_contract_parity.py`` decodes real photos from the JSON alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from petsml.data.decode import JPEG_DRAFT, REDUCING_GAP
from petsml.errors import PetsError
from petsml.io import read_json, write_json

CONTRACT_FILE = "preprocessing.json"
FORMAT = "petsml-onnx-preprocessing"
FORMAT_VERSION = 2  # 2: the decode steps (jpeg_draft, reducing_gap, rounding) stated
INPUT_NAME = "image"
OUTPUT_NAME = "logits"
CHANNEL_ORDERS = ("RGB", "BGR")
LAYOUTS = ("NCHW", "NHWC")


class ContractError(PetsError):
    """A pre-processing contract file is missing, unreadable or inconsistent."""


@dataclass(frozen=True)
class Contract:
    """What a serving runtime must do to a photo before the exported graph sees it."""

    resize_short_side: int  # = the decoded cache's size (decode.size when the model trained)
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    class_names: tuple[str, ...]
    task: str = "breed"
    channel_order: str = "RGB"
    layout: str = "NCHW"
    scale: float = 1.0 / 255.0
    interpolation: str = "bilinear"
    input_name: str = INPUT_NAME
    output_name: str = OUTPUT_NAME
    output: str = "logits"  # softmax over class_names gives probabilities
    dtype: str = "float32"
    decoder: str = "Pillow"  # steps 1-2 name Pillow's operations (libjpeg for JPEG)
    jpeg_draft: bool = JPEG_DRAFT  # JPEG: DCT scaling to >= resize_short_side while decoding
    reducing_gap: float | None = REDUCING_GAP  # Pillow resize's reducing_gap (None: off)
    resize_rounding: str = "half_to_even"  # Python's round() of the resized sides
    crop: str = "centre"  # offsets (size - crop) // 2, for both crops
    extra: dict[str, Any] = field(default_factory=dict)  # strategy, backbone, ... (informative)

    def __post_init__(self) -> None:
        problems = []
        if self.channel_order not in CHANNEL_ORDERS:
            problems.append(f"channel_order {self.channel_order!r} (one of {CHANNEL_ORDERS})")
        if self.layout not in LAYOUTS:
            problems.append(f"layout {self.layout!r} (one of {LAYOUTS})")
        if not 0 < self.input_size <= self.resize_short_side:
            problems.append(
                f"input_size {self.input_size} must be positive and at most resize_short_side "
                f"{self.resize_short_side}"
            )
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            problems.append(f"mean {self.mean} / std {self.std} (three values, std > 0)")
        if not self.class_names:
            problems.append("class_names is empty")
        if problems:
            raise ContractError("pre-processing contract: bad " + "; ".join(problems))

    @classmethod
    def for_model(cls, spec: Mapping[str, Any]) -> Contract:
        """The contract of a saved classifier, from its spec (``load_classifier``'s second value,
        which carries the backbone's input size and normalisation and the caller's meta)."""
        missing = [k for k in ("decode_size", "input_size", "mean", "std", "class_names")
                   if k not in spec]  # fmt: skip
        if missing:
            raise ContractError(
                f"the model's spec lacks {missing}: it was not saved by the training stage "
                "(save_classifier with meta decode_size and class_names); re-train it."
            )
        return cls(
            resize_short_side=int(spec["decode_size"]),
            input_size=int(spec["input_size"]),
            mean=tuple(float(v) for v in spec["mean"]),  # type: ignore[arg-type]
            std=tuple(float(v) for v in spec["std"]),  # type: ignore[arg-type]
            class_names=tuple(str(c) for c in spec["class_names"]),
            task=str(spec.get("task", "breed")),
            # tta: informative only, the averaging over views is inside the exported graph
            extra={k: spec.get(k) for k in ("strategy", "backbone", "feature", "tta") if k in spec},
        )

    def steps(self) -> list[str]:
        """Every step a third party must do, in words, with this contract's numbers."""
        s, n = self.resize_short_side, self.input_size
        draft = (
            f"If the file is a JPEG, decode it with DCT scaling: Pillow img.draft('RGB', ({s}, "
            f"{s})) = libjpeg scale 1/a, a the largest of 8, 4, 2, 1 with a <= min(width // {s}"
            f", height // {s}); the image is then ceil(width / a) x ceil(height / a)."
            if self.jpeg_draft
            else "Decode JPEGs at full size (no DCT scaling)."
        )
        gap = (
            f"reducing_gap={self.reducing_gap} (first a box reduce, Pillow Image.reduce, by "
            f"int(old / new / {self.reducing_gap}) per axis when that is above 1)"
            if self.reducing_gap
            else "no reducing_gap"
        )
        return [
            f"Open the file with {self.decoder} (any format it reads: JPEG, PNG, GIF, ...).",
            draft,
            "16/32-bit grey (modes I;16, I): scale to 8 bits, v * 255 / 65535 (or / 255 when no "
            "value exceeds 255), rounded half up. Then Pillow convert('RGB').",
            f"Resize to (max({s}, round(width * {s} / min(width, height))), max({s}, "
            f"round(height * {s} / min(width, height)))), round = Python's (half to even), with "
            f"Pillow Image.resize(..., Image.Resampling.BILINEAR, {gap}).",
            f"Centre-crop {s} x {s} at ((width - {s}) // 2, (height - {s}) // 2).",
            f"Centre-crop {n} x {n} at (({s} - {n}) // 2, ({s} - {n}) // 2).",
            f"As float32: multiply by {self.scale!r}, subtract mean {list(self.mean)} and "
            f"divide by std {list(self.std)} per channel, channels in {self.channel_order} order.",
            f"Lay out as {self.layout} with a batch axis, feed as input {self.input_name!r}; "
            f"output {self.output_name!r} holds one logit per class_names entry (softmax for "
            "probabilities).",
        ]

    def as_json(self) -> dict[str, Any]:
        body = asdict(self)
        body["mean"], body["std"] = list(self.mean), list(self.std)
        body["class_names"] = list(self.class_names)
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "steps": self.steps(), **body}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str = "contract") -> Contract:
        if data.get("format") != FORMAT:
            raise ContractError(f"{where}: not a {FORMAT} file (format {data.get('format')!r})")
        body = {k: v for k, v in data.items() if k not in ("format", "format_version", "steps")}
        try:
            body["mean"] = tuple(float(v) for v in body["mean"])
            body["std"] = tuple(float(v) for v in body["std"])
            body["class_names"] = tuple(str(c) for c in body["class_names"])
            return cls(**body)
        except (KeyError, TypeError, ValueError) as error:
            raise ContractError(f"{where}: unreadable contract ({error})") from None

    def write(self, folder: str | Path) -> Path:
        path = Path(folder) / CONTRACT_FILE
        write_json(path, self.as_json())
        return path

    def input_shape(self, batch: int | str = "batch") -> list[int | str]:
        s = self.input_size
        return [batch, 3, s, s] if self.layout == "NCHW" else [batch, s, s, 3]


def read_contract(folder: str | Path) -> Contract:
    """``folder/preprocessing.json`` (or a path to the file itself)."""
    path = Path(folder)
    path = path / CONTRACT_FILE if path.is_dir() else path
    if not path.is_file():
        raise ContractError(f"{path}: missing; export the model again (`pets export ...`).")
    try:
        data = read_json(path)
    except (OSError, ValueError) as error:
        raise ContractError(f"{path}: not valid JSON ({error})") from None
    return Contract.from_json(data, str(path))


def prepare(images_u8: np.ndarray, contract: Contract) -> np.ndarray:
    """(N, S, S, 3) RGB uint8 images at ``resize_short_side`` -> the graph's float32 input.

    Steps 2-4 of the contract, numpy only (what a serving process without torch runs).
    """
    images = np.asarray(images_u8)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ContractError(f"expected (N, S, S, 3) uint8 images, got shape {images.shape}")
    height, width = images.shape[1:3]
    size = contract.input_size
    if size > min(height, width):
        raise ContractError(f"input_size {size} is larger than the images ({height}x{width})")
    top, left = (height - size) // 2, (width - size) // 2
    x = images[:, top : top + size, left : left + size].astype(np.float32) * np.float32(
        contract.scale
    )
    if contract.channel_order == "BGR":
        x = x[..., ::-1]
    x = (x - np.asarray(contract.mean, np.float32)) / np.asarray(contract.std, np.float32)
    if contract.layout == "NCHW":
        x = x.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x, dtype=np.float32)


def load_image(path: str | Path, contract: Contract) -> np.ndarray:
    """One photo file -> a batch of one graph input (steps 1-4)."""
    from petsml.data.decode import load_rgb

    return prepare(load_rgb(path, contract.resize_short_side)[None], contract)
