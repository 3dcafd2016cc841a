"""What the served model accepts: input columns, per-row limits, and decoding one image.

Split from :mod:`petsml.tracking.pyfunc` (whose docstring says what the model does): the input
rules are one job. ``model_config`` keys ``allow_paths``, ``max_pixels``, ``max_bytes`` and
``neighbours`` are read here; a served model never opens files (a path is refused without
looking at the disk, so the answer cannot tell a client which files exist).
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from petsml.errors import PetsError

INPUT_COLUMNS = ("image", "image_b64")
MAX_NEIGHBOURS = 100
_MAX_PATH = 4096
# Default input limits (model_config keys max_pixels / max_bytes) for a model logged without
# them; the pipeline logs params.yaml's `serve` values. Kept as literals (the model's code must not
# need the config loader); a test holds them equal to petsml.config.ServeParams.
MAX_PIXELS = 40_000_000
MAX_BYTES = 20 * 1024 * 1024


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
            neighbours=neighbours_k(config.get("neighbours", 0), "model_config neighbours"),
        )
        if limits.max_pixels <= 0 or limits.max_bytes <= 0:
            raise PetsError(f"model_config {config}: max_pixels and max_bytes must be positive")
        return limits

    def as_config(self) -> dict[str, Any]:
        return asdict(self)


def neighbours_k(value: Any, where: str) -> int:
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


def image_cells(frame: pd.DataFrame) -> list[tuple[Any, bool]]:
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


def failed_row(message: str) -> dict[str, Any]:
    return {"label": None, "species": None, "probability": None, "top5": None, "error": message}


def read_image(value: Any, base64_only: bool, size: int, limits: InputLimits):
    """(encoded bytes, decoded (size, size, 3) uint8 photo) of one cell, or :class:`RowError`."""
    data = _image_bytes(value, base64_only, limits)
    try:
        return data, _decode(data, size, limits)
    except RowError:
        raise
    except Exception as error:  # noqa: BLE001 - a decoder failure is this row's error
        raise RowError(f"cannot decode image: {error}") from None
