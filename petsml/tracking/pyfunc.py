"""The trained classifier as an MLflow pyfunc model: image in, breed (or species) out.

Serving decodes exactly as training did: ``load_rgb`` (short-side resize to the decode size,
centre crop) then ``to_input`` (centre crop to the network's input size, normalise). A row
whose image cannot be decoded gets a message in ``error``; the other rows are still predicted.

Input: a DataFrame with a string column ``image`` holding a file path or a base64-encoded image
(a ``data:image/...;base64,`` prefix is accepted), or a column ``image_b64`` holding base64 only.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import logging
import os
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema

log = logging.getLogger(__name__)

ARTIFACT = "model"  # key of model.pt in the pyfunc's artifacts
INPUT_COLUMNS = ("image", "image_b64")
OUTPUT_COLUMNS = ("label", "species", "probability", "top5", "error")
TOP_K = 5
BATCH_SIZE = 32
_MAX_PATH = 4096
# Distributions the model needs at load time; pinned to what is installed when it is logged.
REQUIREMENTS = ("mlflow", "torch", "torchvision", "timm", "pillow", "numpy", "pandas")
PROJECT_DISTRIBUTION = "pets-pipeline"

SIGNATURE = ModelSignature(
    inputs=Schema(
        [
            ColSpec("string", "image", required=False),
            ColSpec("string", "image_b64", required=False),
        ]
    ),
    outputs=Schema(
        [
            ColSpec("string", "label"),
            ColSpec("string", "species"),
            ColSpec("double", "probability"),
            ColSpec("string", "top5"),
            ColSpec("string", "error"),
        ]
    ),
)


def _missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value))


def _b64_bytes(text: str) -> bytes:
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]
    return base64.b64decode("".join(text.split()), validate=True)


def _source(value: Any, base64_only: bool) -> str | io.BytesIO:
    """What ``load_rgb`` should open for one cell: a path, or the decoded bytes."""
    if isinstance(value, bytes | bytearray | memoryview):
        return io.BytesIO(bytes(value))
    if _missing(value):
        raise ValueError("no image given")
    if not isinstance(value, str):
        raise ValueError(f"expected a file path or base64 string, got {type(value).__name__}")
    text = value.strip()
    if not text:
        raise ValueError("empty image value")
    if not base64_only and len(text) < _MAX_PATH and os.path.isfile(text):
        return text
    try:
        return io.BytesIO(_b64_bytes(text))
    except (binascii.Error, ValueError):
        if base64_only:
            raise ValueError("image_b64 is not valid base64") from None
        raise ValueError("neither an existing file path nor valid base64 image data") from None


def _image_cells(frame: pd.DataFrame) -> list[tuple[Any, bool]]:
    """(value, base64_only) per row; ``image`` wins where both columns are filled."""
    present = [c for c in INPUT_COLUMNS if c in frame.columns]
    if not present:
        raise ValueError(
            f"input needs a column 'image' (file path or base64) or 'image_b64'; "
            f"got columns {list(frame.columns)}"
        )
    cells = []
    for _, row in frame.iterrows():
        chosen = (None, False)
        for column in present:
            value = row[column]
            if not _missing(value):
                chosen = (value, column == "image_b64")
                break
        cells.append(chosen)
    return cells


class PetClassifierModel(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper around ``petsml.models.classifier`` (artifact ``model`` = model.pt)."""

    def load_context(self, context) -> None:
        import torch

        from petsml.models.classifier import load_classifier

        model, spec = load_classifier(context.artifacts[ARTIFACT], map_location="cpu")
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = model.eval().to(self.device)
        prep = model.backbone.preprocessing
        self.mean, self.std = list(prep.mean), list(prep.std)
        self.input_size = int(prep.input_size)
        self.spec = dict(spec)
        self.class_names = [str(name) for name in spec["class_names"]]
        self.task = str(spec.get("task", "breed"))
        self.decode_size = int(spec["decode_size"])

    def _species(self, label: str) -> str:
        if self.task == "breed":
            from petsml.data.breeds import species_of

            return species_of(label)
        return label

    def _probabilities(self, images: np.ndarray) -> np.ndarray:
        import torch

        from petsml.data.tensors import to_input

        batch = torch.from_numpy(images).to(self.device)
        x = to_input(batch, self.mean, self.std, size=self.input_size)
        with torch.inference_mode():
            return torch.softmax(self.model(x).float(), dim=1).cpu().numpy()

    def _record(self, p: np.ndarray) -> dict[str, Any]:
        top = np.argsort(-p, kind="stable")[: min(TOP_K, len(p))]
        label = self.class_names[int(top[0])]
        ranked = [{"label": self.class_names[int(i)], "probability": float(p[i])} for i in top]
        return {
            "label": label,
            "species": self._species(label),
            "probability": float(p[top[0]]),
            "top5": json.dumps(ranked),
            "error": "",
        }

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        from petsml.data.decode import load_rgb

        if not isinstance(model_input, pd.DataFrame):
            model_input = pd.DataFrame({"image": list(np.atleast_1d(model_input))})
        cells = _image_cells(model_input)
        records: list[dict[str, Any]] = []
        # decode and predict a batch at a time: memory stays flat however many rows come in
        for start in range(0, len(cells), BATCH_SIZE):
            chunk: list[dict[str, Any] | None] = []
            decoded: list[np.ndarray] = []
            for value, base64_only in cells[start : start + BATCH_SIZE]:
                try:
                    decoded.append(load_rgb(_source(value, base64_only), self.decode_size))
                    chunk.append(None)
                except Exception as error:  # noqa: BLE001 - a decoder failure is this row's error
                    chunk.append(
                        {
                            "label": "",
                            "species": "",
                            "probability": 0.0,
                            "top5": "[]",
                            "error": f"cannot decode image: {error}",
                        }
                    )
            probs = iter(self._probabilities(np.stack(decoded)) if decoded else [])
            records += [item if item is not None else self._record(next(probs)) for item in chunk]
        return pd.DataFrame.from_records(records, columns=list(OUTPUT_COLUMNS))


def _pinned(distribution: str) -> str:
    try:
        version = metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return distribution
    return f"{distribution}=={version.split('+', 1)[0]}"  # drop local tags such as +cpu


def pip_requirements() -> list[str]:
    """Pinned requirements of the served model, the project itself included."""
    return [_pinned(name) for name in (*REQUIREMENTS, PROJECT_DISTRIBUTION)]


def encode_image(path: str | Path, max_side: int = 256) -> str:
    """Base64 of a JPEG re-encoding of ``path``, shrunk so an input example stays small."""
    from PIL import Image

    with Image.open(path) as img:
        img = img.convert("RGB")
        img.thumbnail((max_side, max_side))
        buffer = io.BytesIO()
        img.save(buffer, format="JPEG", quality=90)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _synthetic_example() -> str:
    from PIL import Image

    ramp = np.linspace(0, 255, 64, dtype=np.uint8)
    pixels = np.stack(np.broadcast_arrays(ramp[None, :], ramp[:, None], ramp[::-1, None]), -1)
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buffer, format="JPEG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def input_example(image: str | Path | None = None) -> pd.DataFrame:
    """One-row example: a real image as base64 (a generated one when no file is given)."""
    encoded = encode_image(image) if image is not None else _synthetic_example()
    return pd.DataFrame({"image": [encoded]})


def log_pyfunc_model(
    model_pt: str | Path,
    name: str = "model",
    input_example_image: str | Path | None = None,
    registered_model_name: str | None = None,
    *,
    step: int = 0,
    tags: dict[str, Any] | None = None,
):
    """Log ``model_pt`` as a pyfunc model in the active run; returns MLflow's ``ModelInfo``.

    ``step``: MLflow 3 links the run's metrics logged at this step to the new LoggedModel.
    """
    model_pt = Path(model_pt)
    if not model_pt.is_file():
        from petsml.errors import PetsError

        raise PetsError(f"{model_pt}: model file missing; run `dvc repro train` first.")
    return mlflow.pyfunc.log_model(
        name=name,
        python_model=PetClassifierModel(),
        artifacts={ARTIFACT: str(model_pt)},
        signature=SIGNATURE,
        input_example=input_example(input_example_image),
        pip_requirements=pip_requirements(),
        registered_model_name=registered_model_name,
        step=step,
        tags=tags,
    )
