"""The trained classifier as an MLflow pyfunc model: image in, breed (or species) out.

Serving decodes exactly as training did: ``load_rgb`` (short-side resize to the decode size,
centre crop) then ``to_input`` (centre crop to the network's input size, normalise), and runs
the saved classifier's own forward, so its test-time augmentation (the spec's ``tta``) applies
here exactly as in evaluation. A row
whose image cannot be used gets a message in ``error`` (and null label, species, probability);
the other rows are still predicted.

Input: a DataFrame with a string column ``image`` or ``image_b64`` holding a base64-encoded
image (a ``data:image/...;base64,`` prefix is accepted). File paths in ``image`` are read only
when the model is loaded with ``model_config={"allow_paths": True}`` (the ``pets predict`` CLI
and the Python API); a served model never opens files on the server, so a path there is
refused without looking at the disk (the answer cannot tell a client which files exist).

Limits (``model_config``, stored with the model; defaults below): ``max_bytes`` per encoded
image or file, ``max_pixels`` per image, checked from the header before any pixel is decoded.

Similar photos (optional, off by default): a model logged with a neighbour index
(:mod:`petsml.similar`, the train and validation photos embedded by this model's own backbone)
adds a ``neighbours`` column, a JSON list of ``{"image_id", "breed", "file", "distance"}``
nearest first, when asked for ``k > 0`` of them: the request's ``params`` ``{"neighbours": k}``
or the loader's ``model_config={"neighbours": k}`` (used when the request asks for none).
Without it the output keeps its five columns, so REST clients see the same schema as before.

The model is self-contained: the ``petsml`` package travels inside it (``code_paths``) and its
requirements name only PyPI distributions, so it loads where the project is not installed
(``mlflow models serve`` without ``--env-manager local``, ``mlflow models build-docker``).
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import logging
import os
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

from petsml.errors import PetsError

log = logging.getLogger(__name__)

ARTIFACT = "model"  # key of model.pt in the pyfunc's artifacts
INDEX_ARTIFACT = "neighbours"  # key of the neighbour index (.npz), when logged with one
INPUT_COLUMNS = ("image", "image_b64")
OUTPUT_COLUMNS = ("label", "species", "probability", "top5", "error")
NEIGHBOURS_COLUMN = "neighbours"  # only when neighbours are asked for
MAX_NEIGHBOURS = 100
TOP_K = 5
BATCH_SIZE = 32
_MAX_PATH = 4096
# Default input limits (model_config keys max_pixels / max_bytes) for a model logged without
# them; the pipeline logs params.yaml's `serve` values. Kept as literals (the model's code must not
# need the config loader); a test holds them equal to petsml.config.ServeParams.
MAX_PIXELS = 40_000_000
MAX_BYTES = 20 * 1024 * 1024
# Distributions the model imports when loaded and predicting, pinned to the installed versions
# when it is logged (all on PyPI). The project itself is not one: its code is inside the model.
REQUIREMENTS = ("mlflow", "torch", "torchvision", "timm", "pillow", "numpy", "pandas", "tqdm")
PACKAGE_DIR = Path(__file__).resolve().parents[1]  # petsml/, logged as the model's code

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
            ColSpec("string", NEIGHBOURS_COLUMN, required=False),
        ]
    ),
    params=ParamSchema([ParamSpec(NEIGHBOURS_COLUMN, "long", 0)]),
)


class InputColumnsError(PetsError, MlflowException):
    """No accepted input column: the scoring server answers 400 with this message, no trace."""

    def __init__(self, message: str) -> None:
        MlflowException.__init__(self, message, error_code=INVALID_PARAMETER_VALUE)


class NeighboursError(InputColumnsError):
    """A bad ``neighbours`` count, or neighbours asked of a model without an index: HTTP 400."""


class RowError(ValueError):
    """One row's image cannot be used; reported in that row's ``error``."""


@dataclass(frozen=True)
class InputLimits:
    """What the model accepts; stored as the pyfunc's ``model_config`` when it is logged."""

    allow_paths: bool = False  # read file paths (local CLI / Python API only, never served)
    max_pixels: int = MAX_PIXELS
    max_bytes: int = MAX_BYTES
    neighbours: int = 0  # similar photos per row by default (0: no neighbours column)

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None) -> InputLimits:
        config = dict(config or {})
        limits = cls(
            allow_paths=config.get("allow_paths", False) is True,
            max_pixels=int(config.get("max_pixels", MAX_PIXELS)),
            max_bytes=int(config.get("max_bytes", MAX_BYTES)),
            neighbours=_neighbours_k(config.get("neighbours", 0), "model_config neighbours"),
        )
        if limits.max_pixels <= 0 or limits.max_bytes <= 0:
            raise PetsError(f"model_config {config}: max_pixels and max_bytes must be positive")
        return limits

    def as_config(self) -> dict[str, Any]:
        return asdict(self)


def _neighbours_k(value: Any, where: str) -> int:
    try:
        k = int(value or 0)
    except (TypeError, ValueError):
        raise NeighboursError(f"{where} must be a whole number of photos, got {value!r}") from None
    if not 0 <= k <= MAX_NEIGHBOURS:
        raise NeighboursError(f"{where} must be between 0 and {MAX_NEIGHBOURS}, got {k}")
    return k


def _missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value))


def _check_size(size: int, what: str, limits: InputLimits) -> None:
    if size > limits.max_bytes:
        raise RowError(
            f"{what} is {size} bytes, over the limit of {limits.max_bytes} (model_config max_bytes)"
        )


def _b64_bytes(text: str, limits: InputLimits) -> bytes:
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]
    _check_size(len(text) // 4 * 3, "the base64 image", limits)  # before decoding it
    return base64.b64decode("".join(text.split()), validate=True)


def _read_file(path: str, limits: InputLimits) -> bytes:
    _check_size(os.path.getsize(path), f"file {path}", limits)
    with open(path, "rb") as handle:
        return handle.read(limits.max_bytes + 1)


def _image_bytes(value: Any, base64_only: bool, limits: InputLimits) -> bytes:
    """The encoded image of one cell: base64 decoded, or (paths allowed) the file's bytes."""
    if isinstance(value, bytes | bytearray | memoryview):
        _check_size(len(value), "the image", limits)
        return bytes(value)
    if _missing(value):
        raise RowError("no image given")
    if not isinstance(value, str):
        raise RowError(f"expected a base64 string, got {type(value).__name__}")
    text = value.strip()
    if not text:
        raise RowError("empty image value")
    paths = limits.allow_paths and not base64_only
    if paths and len(text) < _MAX_PATH and os.path.isfile(text):
        return _read_file(text, limits)
    try:
        return _b64_bytes(text, limits)
    except RowError:
        raise
    except (binascii.Error, ValueError):
        if base64_only:
            raise RowError("image_b64 is not valid base64") from None
        if paths:
            raise RowError("neither an existing file nor valid base64 image data") from None
        # decided without touching the disk: the answer is the same whether a path exists or not
        raise RowError(
            "not valid base64 image data (this model reads no files: send the image's bytes "
            "base64-encoded)"
        ) from None


def _decode(data: bytes, size: int, limits: InputLimits) -> np.ndarray:
    """``load_rgb`` on the bytes, after checking the pixel count from the header alone."""
    from PIL import Image, UnidentifiedImageError

    from petsml.data.decode import load_rgb

    with warnings.catch_warnings():  # our max_pixels is the limit, not PIL's bomb heuristics
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as img:  # reads the header only
                width, height = img.size
        except UnidentifiedImageError:
            raise RowError("not an image file (JPEG, PNG, ...)") from None
        except Image.DecompressionBombError as error:
            raise RowError(f"image has too many pixels: {error}") from None
        if width * height > limits.max_pixels:
            raise RowError(
                f"image is {width}x{height} = {width * height} pixels, over the limit of "
                f"{limits.max_pixels} (model_config max_pixels)"
            )
        return load_rgb(io.BytesIO(data), size)


def _image_cells(frame: pd.DataFrame) -> list[tuple[Any, bool]]:
    """(value, base64_only) per row; ``image`` wins where both columns are filled."""
    present = [c for c in INPUT_COLUMNS if c in frame.columns]
    if not present:
        # the pyfunc signature drops unknown columns before predict sees them: name what is
        # accepted rather than what arrived
        got = f" (got {list(map(str, frame.columns))})" if len(frame.columns) else ""
        raise InputColumnsError(
            "input needs a column 'image' or 'image_b64' holding base64-encoded images"
            f"{got}; other columns are ignored. Example: "
            '{"dataframe_split": {"columns": ["image"], "data": [["<base64 JPEG>"]]}}'
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


def _failed(message: str) -> dict[str, Any]:
    return {"label": None, "species": None, "probability": None, "top5": None, "error": message}


class PetClassifierModel(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper around ``petsml.models.classifier`` (artifact ``model`` = model.pt)."""

    def load_context(self, context) -> None:
        import torch

        from petsml.models.classifier import load_classifier

        self.limits = InputLimits.from_config(getattr(context, "model_config", None))
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
        self.index = None
        if INDEX_ARTIFACT in (context.artifacts or {}):
            from petsml.similar.index import NeighbourIndex

            self.index = NeighbourIndex.load(context.artifacts[INDEX_ARTIFACT])

    def _neighbour_count(self, params: Mapping[str, Any] | None) -> int:
        # MLflow fills a missing param with its schema default (0): 0 means "the loader's
        # model_config neighbours", any other count is this request's
        asked = _neighbours_k((params or {}).get(NEIGHBOURS_COLUMN), "params neighbours")
        k = asked or self.limits.neighbours
        if k and self.index is None:
            raise NeighboursError(
                "this model was logged without a neighbour index, so it cannot return "
                "neighbours; re-run `dvc repro track` (or ask for neighbours=0)"
            )
        return k

    def _species(self, label: str) -> str | None:
        """Cat or dog for an official breed; None for a class of the user's own images."""
        if self.task == "breed":
            from petsml.data.breeds import CLASS_ID, species_of

            return species_of(label) if label in CLASS_ID else None
        return label

    def _forward(self, images: np.ndarray, with_embeddings: bool):
        """(probabilities, backbone embeddings or None): one backbone pass for both."""
        import torch

        from petsml.data.tensors import to_input

        batch = torch.from_numpy(images).to(self.device)
        x = to_input(batch, self.mean, self.std, size=self.input_size)
        with torch.inference_mode():  # the model's own forward: its spec's TTA included
            if not with_embeddings:
                return torch.softmax(self.model(x).float(), dim=1).cpu().numpy(), None
            logits, embedded = self.model.forward_with_embedding(x)
            probs = torch.softmax(logits.float(), dim=1).cpu().numpy()
            return probs, embedded.float().cpu().numpy()

    def _probabilities(self, images: np.ndarray) -> np.ndarray:
        return self._forward(images, False)[0]

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

    def _image(self, value: Any, base64_only: bool) -> np.ndarray:
        try:
            return _decode(
                _image_bytes(value, base64_only, self.limits), self.decode_size, self.limits
            )
        except RowError:
            raise
        except Exception as error:  # noqa: BLE001 - a decoder failure is this row's error
            raise RowError(f"cannot decode image: {error}") from None

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        if not isinstance(model_input, pd.DataFrame):
            model_input = pd.DataFrame({"image": list(np.atleast_1d(model_input))})
        cells = _image_cells(model_input)
        k = self._neighbour_count(params)
        records: list[dict[str, Any]] = []
        # decode and predict a batch at a time: memory stays flat however many rows come in
        for start in range(0, len(cells), BATCH_SIZE):
            chunk: list[dict[str, Any] | None] = []
            decoded: list[np.ndarray] = []
            for value, base64_only in cells[start : start + BATCH_SIZE]:
                try:
                    decoded.append(self._image(value, base64_only))
                    chunk.append(None)
                except RowError as error:
                    chunk.append(_failed(str(error)))
            probs, embedded = self._forward(np.stack(decoded), k > 0) if decoded else ([], None)
            answers = iter(probs)
            near = iter(self.index.neighbours(embedded, k) if embedded is not None else [])
            for item in chunk:
                if item is None:
                    item = self._record(next(answers))
                    if k:
                        item[NEIGHBOURS_COLUMN] = json.dumps([n.as_dict() for n in next(near)])
                records.append(item)
        columns = list(OUTPUT_COLUMNS) + ([NEIGHBOURS_COLUMN] if k else [])
        out = pd.DataFrame.from_records(records, columns=columns).astype(object)
        # a failed row's label, species, probability and top5 are null (JSON null when served),
        # not NaN (invalid JSON) or 0.0
        return out.where(out.notna(), None)


def _pinned(distribution: str) -> str:
    try:
        version = metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return distribution
    return f"{distribution}=={version.split('+', 1)[0]}"  # drop local tags such as +cpu


def pip_requirements() -> list[str]:
    """Pinned PyPI requirements of the served model (the project's code travels inside it)."""
    return [_pinned(name) for name in REQUIREMENTS]


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
    limits: InputLimits | None = None,
    index: str | Path | None = None,
):
    """Log ``model_pt`` as a pyfunc model in the active run; returns MLflow's ``ModelInfo``.

    ``step``: MLflow 3 links the run's metrics logged at this step to the new LoggedModel.
    ``limits``: stored as the model_config; paths stay off whatever is given (the loader opts in).
    ``index``: a neighbour index ``.npz`` (:mod:`petsml.similar.index`) shipped inside the model.
    """
    model_pt = Path(model_pt)
    if not model_pt.is_file():
        raise PetsError(f"{model_pt}: model file missing; run `dvc repro train` first.")
    config = InputLimits(**{**asdict(limits or InputLimits()), "allow_paths": False})
    artifacts = {ARTIFACT: str(model_pt)}
    if index is not None:
        artifacts[INDEX_ARTIFACT] = str(index)
    return mlflow.pyfunc.log_model(
        name=name,
        python_model=PetClassifierModel(),
        artifacts=artifacts,
        code_paths=[str(PACKAGE_DIR)],
        model_config=config.as_config(),
        signature=SIGNATURE,
        input_example=input_example(input_example_image),
        pip_requirements=pip_requirements(),
        registered_model_name=registered_model_name,
        step=step,
        tags=tags,
    )
