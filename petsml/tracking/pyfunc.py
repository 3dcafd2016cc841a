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
import io
import json
import logging
from collections.abc import Mapping
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

from petsml.errors import PetsError
from petsml.tracking.pyfunc_input import (  # noqa: F401 - names this module has always exported
    INPUT_COLUMNS,
    MAX_BYTES,
    MAX_NEIGHBOURS,
    MAX_PIXELS,
    InputColumnsError,
    InputLimits,
    NeighboursError,
    RowError,
    failed_row,
    image_cells,
    neighbours_k,
    read_image,
)
from petsml.tracking.pyfunc_monitor import logged_config, open_recorder, recording_paused

log = logging.getLogger(__name__)

ARTIFACT = "model"  # key of model.pt in the pyfunc's artifacts
INDEX_ARTIFACT = "neighbours"  # key of the neighbour index (.npz), when logged with one
REFERENCE_ARTIFACT = "reference"  # key of the monitoring reference (.npz), when logged with one
OUTPUT_COLUMNS = ("label", "species", "probability", "top5", "error")
NEIGHBOURS_COLUMN = "neighbours"  # only when neighbours are asked for
PREDICTION_ID_COLUMN = "prediction_id"  # only when predictions are recorded (monitor.log)
TOP_K = 5
BATCH_SIZE = 32
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
            ColSpec("string", PREDICTION_ID_COLUMN, required=False),
        ]
    ),
    params=ParamSchema([ParamSpec(NEIGHBOURS_COLUMN, "long", 0)]),
)


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
        model_dir = Path(context.artifacts[ARTIFACT]).resolve().parents[1]  # <model>/artifacts/
        self.recorder = open_recorder(
            getattr(context, "model_config", None), model_dir, self.class_names
        )

    def _neighbour_count(self, params: Mapping[str, Any] | None) -> int:
        # MLflow fills a missing param with its schema default (0): 0 means "the loader's
        # model_config neighbours", any other count is this request's
        asked = neighbours_k((params or {}).get(NEIGHBOURS_COLUMN), "params neighbours")
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

    def _remember(self, probs, embedded, photos, items) -> None:
        """Record each answered photo (``monitor.log``); its id goes into the answer's row.
        A failure only logs (the recorder's own rule): never an answer lost."""
        if self.recorder is None:
            return
        for p, vector, (data, decoded), item in zip(probs, embedded, photos, items, strict=True):
            item[PREDICTION_ID_COLUMN] = self.recorder.record(p, data, vector, decoded)

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        if not isinstance(model_input, pd.DataFrame):
            model_input = pd.DataFrame({"image": list(np.atleast_1d(model_input))})
        cells = image_cells(model_input)
        k = self._neighbour_count(params)
        recording = self.recorder is not None
        records: list[dict[str, Any]] = []
        # decode and predict a batch at a time: memory stays flat however many rows come in
        for start in range(0, len(cells), BATCH_SIZE):
            chunk: list[dict[str, Any] | None] = []
            photos: list[tuple[bytes, np.ndarray]] = []
            for value, base64_only in cells[start : start + BATCH_SIZE]:
                try:
                    photos.append(read_image(value, base64_only, self.decode_size, self.limits))
                    chunk.append(None)
                except RowError as error:
                    chunk.append(failed_row(str(error)))
            # the embedding is computed in the same pass when neighbours or a record need it
            batch = np.stack([decoded for _, decoded in photos]) if photos else None
            probs, embedded = self._forward(batch, k > 0 or recording) if photos else ([], None)
            answers = iter(probs)
            near = iter(self.index.neighbours(embedded, k) if k and embedded is not None else [])
            answered = []
            for item in chunk:
                if item is None:
                    item = self._record(next(answers))
                    if k:
                        item[NEIGHBOURS_COLUMN] = json.dumps([n.as_dict() for n in next(near)])
                    answered.append(item)
                records.append(item)
            if photos:
                self._remember(probs, embedded, photos, answered)
        columns = list(OUTPUT_COLUMNS) + ([NEIGHBOURS_COLUMN] if k else [])
        columns += [PREDICTION_ID_COLUMN] if recording else []
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
    reference: str | Path | None = None,
    monitor: Mapping[str, Any] | None = None,
    model_name: str = "",
):
    """Log ``model_pt`` as a pyfunc model in the active run; returns MLflow's ``ModelInfo``.

    ``step``: MLflow 3 links the run's metrics logged at this step to the new LoggedModel.
    ``limits``: stored as the model_config; paths stay off whatever is given (the loader opts in).
    ``index``: a neighbour index ``.npz`` (:mod:`petsml.similar.index`) shipped inside the model.
    ``reference``: the monitoring reference ``.npz`` (:mod:`petsml.tracking.reference_files`).
    ``monitor``: params.yaml's ``monitor:`` section, stored in the model_config so the served
    model records its answers (None: it never records); ``model_name``: the registered name
    records carry. Recording is paused while MLflow checks the input example here.
    """
    model_pt = Path(model_pt)
    if not model_pt.is_file():
        raise PetsError(f"{model_pt}: model file missing; run `dvc repro train` first.")
    config = InputLimits(**{**asdict(limits or InputLimits()), "allow_paths": False})
    artifacts = {ARTIFACT: str(model_pt)}
    if index is not None:
        artifacts[INDEX_ARTIFACT] = str(index)
    if reference is not None:
        artifacts[REFERENCE_ARTIFACT] = str(reference)
    model_config = {**config.as_config(), **logged_config(monitor, model_name)}
    with recording_paused():
        return _log(name, artifacts, model_config, input_example_image, registered_model_name,
                    step, tags)  # fmt: skip


def _log(name, artifacts, model_config, example, registered_model_name, step, tags):
    return mlflow.pyfunc.log_model(
        name=name,
        python_model=PetClassifierModel(),
        artifacts=artifacts,
        code_paths=[str(PACKAGE_DIR)],
        model_config=model_config,
        signature=SIGNATURE,
        input_example=input_example(example),
        pip_requirements=pip_requirements(),
        registered_model_name=registered_model_name,
        step=step,
        tags=tags,
    )
