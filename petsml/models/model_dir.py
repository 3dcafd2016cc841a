"""The model folder contract: what ``train@<strategy>`` writes and everything downstream reads.

``models/<strategy>/`` holds ``model.pt`` (:func:`~petsml.models.classifier.save_classifier`),
``history.json`` (``{"epochs": [...], "search": [...]}``) and ``summary.json`` (the strategy's
headline numbers). Every writer goes through :func:`write_model_dir` and every reader through
the functions below, so the file names and shapes live in one place (docs/ARCHITECTURE.md,
"Model directory contract"). It sits in the models layer so that training, evaluation and
tracking may all import it.
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Any

from petsml.errors import PetsError
from petsml.io import atomic_dir, read_json, write_json
from petsml.models.classifier import Classifier, load_classifier, save_classifier

MODEL_FILE = "model.pt"
HISTORY_FILE = "history.json"
SUMMARY_FILE = "summary.json"
FILES = (HISTORY_FILE, MODEL_FILE, SUMMARY_FILE)

_MISSING: Any = object()


class ModelDirError(PetsError):
    """A model folder lacks a file or holds one that cannot be read."""


@dataclass(frozen=True)
class ModelMeta:
    """What every strategy stores in model.pt beside the network (its spec's metadata)."""

    strategy: str
    task: str
    class_names: list[str]
    decode_size: int
    backbone: str  # model.backbone as given
    frozen_backbone: bool = False  # the trunk is the featurize stage's (evaluated from its cache)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Summary:
    """summary.json: a strategy's headline numbers, the same keys for every strategy."""

    strategy: str
    task: str
    backbone: str
    val_accuracy: float
    train_seconds: float
    best_epoch: int | None  # trained strategies: the epoch kept
    epochs_run: int  # 0 for a head fitted on cached features
    device: str
    params: dict[str, Any]  # what the fit chose and ran with (C, block, lr, ...)
    stopped_early: bool = False
    resumed_from_epoch: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any, source: str | Path) -> Summary:
        """Checked on read: a summary missing a key, or with one this contract does not know,
        names the file and the fix."""
        names = {f.name for f in fields(cls)}
        required = {f.name for f in fields(cls) if f.default is MISSING}
        if not isinstance(data, dict) or not required <= set(data) or not set(data) <= names:
            got = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise ModelDirError(
                f"{source}: not a strategy summary (keys {got}; the contract is "
                f"{sorted(names)}); run `dvc repro train` to rewrite it."
            )
        return cls(**data)


@dataclass
class ModelDir:
    """A model folder read back: the classifier (when loaded), its spec and both JSON files."""

    path: Path
    summary: dict[str, Any]
    history: dict[str, Any]
    model: Classifier | None = None
    spec: dict[str, Any] | None = None


def model_file(model_dir: str | Path) -> Path:
    """``model_dir/model.pt``."""
    return Path(model_dir) / MODEL_FILE


def history_file(model_dir: str | Path) -> Path:
    """``model_dir/history.json``."""
    return Path(model_dir) / HISTORY_FILE


def summary_file(model_dir: str | Path) -> Path:
    """``model_dir/summary.json``."""
    return Path(model_dir) / SUMMARY_FILE


def write_model_dir(
    out_dir: str | Path,
    model: Classifier,
    meta: ModelMeta,
    *,
    summary: Summary,
    epochs: list[dict[str, Any]] | None = None,
    search: list[dict[str, Any]] | None = None,
) -> None:
    """Write the whole folder at once: it replaces ``out_dir`` only when every file is written.

    ``meta`` goes into model.pt's spec; ``epochs`` (trained strategies) and ``search`` (the C
    grid of frozen-feature ones) make up history.json.
    """
    with atomic_dir(out_dir) as tmp:
        save_classifier(model, model_file(tmp), meta.as_dict())
        write_json(history_file(tmp), {"epochs": list(epochs or []), "search": list(search or [])})
        write_json(summary_file(tmp), summary.as_dict())


def _read(path: Path, default: Any) -> Any:
    if not path.is_file():
        if default is not _MISSING:
            return default
        raise ModelDirError(f"{path}: missing; run `dvc repro train` to write the model folder.")
    try:
        return read_json(path)
    except (OSError, ValueError) as error:
        raise ModelDirError(
            f"{path}: not valid JSON ({error}); run `dvc repro train` to rewrite it."
        ) from None


def read_summary(model_dir: str | Path, default: Any = _MISSING) -> dict[str, Any]:
    """summary.json, checked against :class:`Summary`; ``default`` when it is missing (without
    one, a missing file is an error)."""
    path = summary_file(model_dir)
    data = _read(path, default)
    if data is default and not path.is_file():
        return data
    return Summary.from_dict(data, path).as_dict()


def read_history(model_dir: str | Path, default: Any = _MISSING) -> dict[str, Any]:
    """history.json; ``default`` when it is missing (without one, a missing file is an error)."""
    return _read(history_file(model_dir), default)


def read_model_dir(
    model_dir: str | Path, *, load_model: bool = True, map_location: str = "cpu"
) -> ModelDir:
    """Every file of the folder; ``load_model=False`` skips rebuilding the classifier."""
    model_dir = Path(model_dir)
    if not model_file(model_dir).is_file():
        raise ModelDirError(
            f"{model_file(model_dir)}: missing; run `dvc repro train` to write the model folder."
        )
    found = ModelDir(model_dir, read_summary(model_dir), read_history(model_dir))
    if load_model:
        found.model, found.spec = load_classifier(model_file(model_dir), map_location)
    return found
