"""What one prediction leaves behind: a :class:`PredictionRecord`, built by :func:`make_record`.

A record holds what drift detection and feedback need and nothing a person could be recognised
from: the model that answered (name, version, alias), the answer (top-5 and the full probability
vector, which black-box shift detection tests class by class), the embedding the model computed
anyway (the pooled penultimate vector, which the MMD test compares), facts about the image that
need no pixels kept (width, height, format, mode, whether it is greyscale) and a SHA-256 of its
bytes (repeats of one photo are counted once, and feedback photos are named by it). The photo
itself is kept only when ``keep_photos`` is on: photos are personal data.

The vectors travel as little-endian bytes: probabilities as float32 (exact enough for a KS test),
the embedding as float16 (half the space; PCA and an RBF kernel do not see the difference).
"""

from __future__ import annotations

import hashlib
import io
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from petsml.errors import PetsError

TOP_K = 5
PROBABILITY_DTYPE = np.dtype("<f4")
EMBEDDING_DTYPE = np.dtype("<f2")
# PIL modes that hold no colour at all; an RGB photo can be grey too (:func:`is_greyscale`).
GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"})
# An RGB photo counts as greyscale when 99 % of its sampled pixels have channels this close:
# a grey photo saved as a colour JPEG keeps a few levels of chroma noise, a colour photo has
# far more than this spread in most of its pixels.
GREY_SPREAD = 12
GREY_SAMPLE = 64  # pixels per side sampled for the check: the decoded photo is not re-read


class RecordError(PetsError):
    """The arrays or facts handed to :func:`make_record` do not describe one prediction."""


@dataclass(frozen=True)
class ModelRef:
    """Which registered model answered: ``name``, ``version`` and the ``alias`` it was served by
    (``champion``), each empty when unknown (a local ``model.pt``)."""

    name: str = ""
    version: str = ""
    alias: str = ""

    def label(self) -> str:
        """``name v<version>`` (or what is known of it), for reports and verdict lines."""
        if not self.name:
            return "unregistered model"
        return f"{self.name} v{self.version}" if self.version else self.name


@dataclass(frozen=True)
class ImageFacts:
    """The image, described without its pixels."""

    width: int
    height: int
    format: str  # PIL's name: JPEG, PNG, GIF, WEBP, ... ("" when unknown)
    mode: str  # PIL's mode as stored: RGB, L, RGBA, CMYK, P, ...
    greyscale: bool  # no colour: a grey mode, or RGB whose channels agree
    bytes: int  # size of the encoded image
    sha256: str  # of the encoded bytes


@dataclass(frozen=True)
class PredictionRecord:
    """One prediction as the monitoring store keeps it (see the module docstring)."""

    id: str
    time: float  # UTC seconds since the epoch
    model: ModelRef
    class_names: tuple[str, ...]  # order of ``probabilities``
    top5: tuple[tuple[str, float], ...]  # (class, probability), most probable first
    probabilities: np.ndarray  # (K,) float32, sums to 1
    embedding: np.ndarray  # (D,) float16; empty when the caller computed none
    image: ImageFacts
    source: str = ""  # who asked: web, serve, predict, ...
    photo: bytes | None = field(default=None, repr=False)  # only with keep_photos

    @property
    def label(self) -> str:
        return self.top5[0][0]

    @property
    def confidence(self) -> float:
        return self.top5[0][1]

    def top5_json(self) -> str:
        return json.dumps([{"label": c, "probability": p} for c, p in self.top5])


def is_greyscale(mode: str, decoded: np.ndarray | None = None) -> bool:
    """Whether the photo has no colour: a grey PIL ``mode``, or ``decoded`` (H, W, 3) uint8
    pixels whose channels agree within :data:`GREY_SPREAD` in 99 % of a strided sample."""
    if mode in GREY_MODES:
        return True
    if decoded is None or decoded.ndim != 3 or decoded.shape[2] < 3:
        return False
    step_y = max(1, decoded.shape[0] // GREY_SAMPLE)
    step_x = max(1, decoded.shape[1] // GREY_SAMPLE)
    sample = decoded[::step_y, ::step_x, :3].astype(np.int16)
    spread = sample.max(axis=2) - sample.min(axis=2)
    return bool(np.percentile(spread, 99) <= GREY_SPREAD)


def image_facts(data: bytes, decoded: np.ndarray | None = None) -> ImageFacts:
    """Facts of encoded image ``data`` from its header alone (no second decode); ``decoded`` is
    the model's own decoded RGB array, which :func:`is_greyscale` samples."""
    from PIL import Image, UnidentifiedImageError

    digest = hashlib.sha256(data).hexdigest()
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
            fmt, mode = img.format or "", img.mode
    except (UnidentifiedImageError, OSError) as error:
        raise RecordError(f"not an image the model could have read: {error}") from None
    return ImageFacts(
        int(width), int(height), fmt, mode, is_greyscale(mode, decoded), len(data), digest
    )


def top_k(probabilities: np.ndarray, class_names: tuple[str, ...], k: int = TOP_K):
    """The ``k`` most probable (class, probability) pairs, stable on ties."""
    order = np.argsort(-probabilities, kind="stable")[: min(k, len(probabilities))]
    return tuple((class_names[int(i)], float(probabilities[i])) for i in order)


def make_record(
    probabilities: np.ndarray,
    class_names: list[str] | tuple[str, ...],
    image: ImageFacts,
    *,
    model: ModelRef | None = None,
    embedding: np.ndarray | None = None,
    source: str = "",
    photo: bytes | None = None,
    when: float | None = None,
    record_id: str | None = None,
) -> PredictionRecord:
    """A record of one answered prediction; ``photo`` is kept only if given (``keep_photos``)."""
    probs = np.asarray(probabilities, dtype=np.float64).reshape(-1)
    names = tuple(str(name) for name in class_names)
    if len(probs) != len(names) or not len(names):
        raise RecordError(
            f"{len(probs)} probabilities for {len(names)} class names: pass the model's own "
            "softmax output and its spec's class_names"
        )
    if not np.all(np.isfinite(probs)) or probs.min() < 0 or abs(probs.sum() - 1) > 1e-3:
        raise RecordError("probabilities must be a softmax output (finite, >= 0, summing to 1)")
    vector = np.zeros(0) if embedding is None else np.asarray(embedding).reshape(-1)
    if vector.size and not np.all(np.isfinite(vector)):
        raise RecordError("the embedding holds NaN or infinite values")
    return PredictionRecord(
        id=record_id or uuid.uuid4().hex,
        time=time.time() if when is None else float(when),
        model=model or ModelRef(),
        class_names=names,
        top5=top_k(probs, names),
        probabilities=probs.astype(PROBABILITY_DTYPE),
        embedding=vector.astype(EMBEDDING_DTYPE),
        image=image,
        source=str(source),
        photo=photo,
    )


def pack(vector: np.ndarray, dtype: np.dtype) -> bytes:
    return np.ascontiguousarray(vector, dtype=dtype).tobytes()


def unpack(blob: Any, dtype: np.dtype) -> np.ndarray:
    """The vector from a stored blob (``bytes`` from SQLite, ``memoryview`` from psycopg2)."""
    if blob is None:
        return np.zeros(0, np.float32)
    return np.frombuffer(bytes(blob), dtype=dtype).astype(np.float32)
