"""Typed view of ``params.yaml``, the pipeline's single source of configuration.

Every stage and flow loads its settings through :func:`load_params`, so a typo or a value out of
range fails at start-up with the dotted key that is wrong, not deep inside a training loop.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from petsml.errors import PetsError
from petsml.io import load_yaml

# The strategy names train.strategies accepts. The registry (petsml/training/strategies.py)
# is where a strategy is defined; config sits below training and cannot import it, so the names
# are repeated here and tests/test_strategies.py checks that both lists agree.
STRATEGIES = ("feature_extractor", "svm_early", "finetune_top", "finetune_full", "scratch")
Strategy = Literal[STRATEGIES]  # type: ignore[valid-type]  # the same names, one list
FEATURE_STRATEGIES = ("feature_extractor", "svm_early")  # consume the cached features
TRAINED_STRATEGIES = ("finetune_top", "finetune_full", "scratch")  # consume decoded images

# Test-time augmentation of the shipped model (train.tta): the modes of the registry in
# petsml/models/classifier.py (TTA), which config sits below; tests/test_tta.py holds both equal.
TTA_MODES = ("none", "flip")

DEFAULT_PARAMS = Path("params.yaml")


class ConfigError(PetsError):
    """A params.yaml value is missing or invalid; the message names the key and the file."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Md5Params(_Section):
    images: str = Field(pattern=r"^[0-9a-fA-F]{32}$")
    annotations: str = Field(pattern=r"^[0-9a-fA-F]{32}$")


# Where the photos come from: the names petsml/data/sources.py defines (config sits below data
# and cannot import that table; tests/test_folder_source.py checks that both lists agree).
SOURCES = ("oxford-pets", "folder")
OFFICIAL_SOURCE = "oxford-pets"
OFFICIAL_FOLDER = "data/raw"  # where the download stage extracts the official archives
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # a dataset name: a registered model's suffix


class DataParams(_Section):
    task: Literal["breed", "species"] = "breed"
    base_url: str
    md5: Md5Params
    retries: int = Field(5, ge=0)
    timeout_s: float = Field(30, gt=0)
    # oxford-pets: the official archives, downloaded into data/raw. folder: your own photos in
    # the ImageFolder layout, <data.folder>/<class>/<image>. data.folder is a DVC dep of the
    # stages that read photos (dvc.yaml interpolates it), so adding photos re-runs what changed.
    source: Literal[SOURCES] = OFFICIAL_SOURCE  # type: ignore[valid-type]
    folder: str = OFFICIAL_FOLDER
    name: str | None = None  # the dataset's name; None = the folder's name (source folder)
    test_list: str | None = None  # source folder: a file in data.folder naming the test images

    @model_validator(mode="after")
    def _source(self) -> DataParams:
        folder = Path(self.folder)
        if self.source == OFFICIAL_SOURCE:
            if folder != Path(OFFICIAL_FOLDER):
                raise ValueError(
                    f"folder: {self.folder!r} with data.source {OFFICIAL_SOURCE!r}, "
                    f"whose photos are the download stage's output: keep data.folder: "
                    f"{OFFICIAL_FOLDER}, or set data.source: folder to read your own photos"
                )
            if self.test_list is not None:
                raise ValueError(
                    "test_list: applies to data.source: folder only (oxford-pets has its "
                    "official test list); remove it"
                )
            return self
        if folder == Path(OFFICIAL_FOLDER) or folder.is_relative_to(OFFICIAL_FOLDER):
            raise ValueError(
                "folder: data.source is folder but data.folder is the download stage's data/raw: "
                "set it to your photos' folder (<class>/<image> inside), relative to the "
                "project root or absolute"
            )
        if self.task != "breed":
            raise ValueError(
                f"task: {self.task!r}, but a folder's labels are its class folders: "
                "use data.task: breed with data.source: folder"
            )
        if self.test_list is not None:
            test = Path(self.test_list)
            if test.is_absolute() or ".." in test.parts or not test.parts:
                raise ValueError(
                    f"test_list: {self.test_list!r} must be a file inside data.folder, "
                    "given relative to it (e.g. test.txt), so DVC sees it change with the photos"
                )
        name = self.dataset_name
        if not _NAME.match(name):
            what = "name: " if self.name is not None else "folder: the folder's name "
            raise ValueError(
                f"{what}{name!r} is not a usable dataset name (letters, digits, '_', '.', '-'; "
                "it names the registered model): set data.name"
            )
        return self

    @property
    def dataset_name(self) -> str:
        """``data.name``, else ``oxford-pets`` or the folder's own name."""
        if self.name is not None:
            return self.name
        if self.source == OFFICIAL_SOURCE:
            return OFFICIAL_SOURCE
        return Path(self.folder).resolve().name


class ValidateParams(_Section):
    require_all_breeds: bool = True
    min_images_per_breed: int = Field(150, ge=0)
    max_images_per_breed: int = Field(250, ge=1)
    min_width: int = Field(32, ge=1)
    min_height: int = Field(32, ge=1)
    # data.source: folder: the bounds per class folder (the *_per_breed ones are the official
    # data's). 5 = at least one photo each for train, validation and a drawn test split.
    min_images_per_class: int = Field(5, ge=1)
    max_images_per_class: int | None = Field(None, ge=1)  # None = no upper bound

    @model_validator(mode="after")
    def _ordered(self) -> ValidateParams:
        if self.min_images_per_breed > self.max_images_per_breed:
            raise ValueError("min_images_per_breed must not exceed max_images_per_breed")
        if self.max_images_per_class is not None and (
            self.min_images_per_class > self.max_images_per_class
        ):
            raise ValueError("min_images_per_class: must not exceed validate.max_images_per_class")
        return self


class SplitParams(_Section):
    val_fraction: float = Field(0.2, gt=0, lt=1)
    seed: int = 42
    # data.source: folder without data.test_list: a stratified slice of each class is the test set
    test_fraction: float = Field(0.2, gt=0, lt=1)

    @model_validator(mode="after")
    def _room_for_train(self) -> SplitParams:
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError(
                "test_fraction: split.val_fraction + split.test_fraction must stay below 1 "
                "(images are left to train on)"
            )
        return self


class DecodeParams(_Section):
    size: int = Field(256, ge=16, le=1024)
    workers: int = Field(0, ge=0)


class ModelParams(_Section):
    backbone: str = "efficientnet_lite1"
    pretrained: bool = True
    image_size: int | None = Field(None, ge=16)
    # An index into the backbone's blocks (negative = from the end), or "auto": the block the
    # advise stage's probe curve found best (reports/advice.json), resolved by
    # petsml.models.early_block before any network is built.
    early_block: int | Literal["auto"] = "auto"
    precision: Literal["auto", "bf16", "fp32"] = "auto"


class FeaturesParams(_Section):
    # every inference pass (featurize, evaluation, a fine-tune's frozen trunk); auto = by device
    batch_size: int | Literal["auto"] = "auto"

    @field_validator("batch_size")
    @classmethod
    def _positive(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError("must be a positive integer or auto")
        return value


class TrainParams(_Section):
    strategies: list[Strategy] = Field(default_factory=lambda: ["feature_extractor", "svm_early"])
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    seed: int = 0
    epochs: int = Field(8, ge=1)
    batch_size: int = Field(32, ge=1)
    patience: int = Field(3, ge=1)
    warmup_epochs: int = Field(1, ge=0)
    prefetch: int = Field(2, ge=0)
    compile: bool = False
    # data-parallel under torchrun (petsml.training.distributed): auto = when launched so
    distributed: Literal["auto", "on", "off"] = "auto"
    # the shipped model's test-time augmentation, saved in model.pt (evaluation and serving alike)
    tta: Literal[TTA_MODES] = "none"  # type: ignore[valid-type]

    @field_validator("strategies")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("list at least one strategy")
        if len(set(value)) != len(value):
            raise ValueError("strategies are listed more than once")
        return value


class LinearParams(_Section):
    C: list[float] = Field(min_length=1)


class FinetuneTopParams(_Section):
    unfreeze_blocks: int = Field(2, ge=1)
    lr: float = Field(1e-3, gt=0)
    backbone_lr_scale: float = Field(0.1, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    cache_flip: Literal["map", "image", "none"] = "map"
    head_init: Literal["probe", "random"] = "probe"
    probe_C: list[float] = Field([0.01, 0.1, 1.0], min_length=1)


class FinetuneFullParams(_Section):
    lr: float = Field(1e-3, gt=0)
    layer_decay: float = Field(0.7, gt=0, le=1)
    weight_decay: float = Field(1e-4, ge=0)
    head_init: Literal["probe", "random"] = "probe"
    probe_C: list[float] = Field([0.01, 0.1, 1.0], min_length=1)


class ScratchParams(_Section):
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)


class EvaluateParams(_Section):
    calibration_bins: int = Field(15, ge=2)


class CompareParams(_Section):
    """The ``compare`` stage's ONNX columns: each strategy exported and measured in a temporary
    folder (petsml.compare_onnx). Off by default: an export, a parity pass over the test split
    and the batch-1 timings cost more than the rest of the stage (21 s for the e2e test
    pipeline's three Lite0 models at 64 px on the 2-core project machine); int8 adds quantization
    calibrated on ``calibration`` train photos."""

    onnx: bool = False  # ONNX fp32 size, batch-1 p50 latency and top-1 agreement with PyTorch
    onnx_int8: bool = False  # + ONNX int8 size, p50 latency and accuracy drop (points)
    calibration: int = Field(100, ge=1)  # training photos the int8 activation ranges come from
    latency_runs: int = Field(20, ge=1)  # ONNX: timed batch-1 calls per model after warm-up
    # PyTorch latency columns: seconds for the whole table, shared by its distinct networks
    latency_budget_s: float = Field(5.0, gt=0)

    @model_validator(mode="after")
    def _int8_needs_onnx(self) -> CompareParams:
        if self.onnx_int8 and not self.onnx:
            raise ValueError(
                "onnx_int8: true needs onnx: true (int8 is quantized from the fp32 export); "
                "set compare.onnx: true or compare.onnx_int8: false"
            )
        return self


class AdviseParams(_Section):
    """The ``advise`` stage: which strategy to ship, measured on the cached features before
    training (petsml.advice.decision says how each axis is decided)."""

    small_below: int = Field(100, ge=1)  # median train images per class below this = small
    alpha: float = Field(0.05, gt=0, lt=1)  # significance an earlier block must reach = unlike
    # the ImageNet classifier's mean top-1 probability from which photos count as ImageNet-like
    imagenet_confidence: float = Field(0.3, ge=0, le=1)
    fractions: list[float] = Field([0.1, 0.25, 0.5, 1.0], min_length=2)
    max_train_per_class: int | None = Field(40, ge=1)  # None = every train image
    max_val_per_class: int | None = Field(None, ge=1)  # None = every validation image
    seed: int = 0
    C: float = Field(0.1, gt=0)  # the backbone ranking's probe (logistic regression)
    backbones: list[str] = Field(default_factory=list)

    @field_validator("fractions")
    @classmethod
    def _fractions(cls, value: list[float]) -> list[float]:
        if any(not 0 < f <= 1 for f in value) or sorted(set(value)) != value:
            raise ValueError("fractions must increase strictly, each in (0, 1]")
        return value


class MlflowParams(_Section):
    experiment: str = "oxford-pets"


class RegistryParams(_Section):
    model_prefix: str = "oxford-pets"
    max_p_value: float = Field(0.05, gt=0, le=1)


class ServeParams(_Section):
    """Input limits stored with every logged model (its ``model_config``), checked per row."""

    # A 40-megapixel photo decodes to 120 MB of RGB; 20 MiB covers any camera JPEG. max_pixels
    # is the one pixel limit: the validate stage quarantines training photos over it too.
    max_pixels: int = Field(40_000_000, ge=1)
    max_bytes: int = Field(20 * 1024 * 1024, ge=1)


class Params(_Section):
    data: DataParams
    validate_: ValidateParams = Field(alias="validate")
    split: SplitParams
    decode: DecodeParams = DecodeParams()
    model: ModelParams = ModelParams()
    features: FeaturesParams = FeaturesParams()
    train: TrainParams = TrainParams()
    feature_extractor: LinearParams = LinearParams(C=[0.01, 0.03, 0.1, 0.3, 1.0, 3.0])
    svm_early: LinearParams = LinearParams(C=[0.001, 0.01, 0.1, 1.0])
    finetune_top: FinetuneTopParams = FinetuneTopParams()
    finetune_full: FinetuneFullParams = FinetuneFullParams()
    scratch: ScratchParams = ScratchParams()
    evaluate: EvaluateParams = EvaluateParams()
    compare: CompareParams = CompareParams()
    advise: AdviseParams = AdviseParams()
    mlflow: MlflowParams = MlflowParams()
    registry: RegistryParams = RegistryParams()
    serve: ServeParams = ServeParams()

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @property
    def validate_params(self) -> ValidateParams:
        return self.validate_

    @property
    def registered_model_name(self) -> str:
        """``<prefix>-<task>`` for the official data; ``<prefix>-<dataset name>`` for a folder."""
        if self.data.source == OFFICIAL_SOURCE:
            return f"{self.registry.model_prefix}-{self.data.task}"
        return f"{self.registry.model_prefix}-{self.data.dataset_name}"

    def flat(self) -> dict[str, Any]:
        """Dotted key -> value, the shape MLflow params and DVC ``-S`` overrides use."""
        out: dict[str, Any] = {}

        def walk(prefix: str, value: Any) -> None:
            if isinstance(value, dict):
                for key, sub in value.items():
                    walk(f"{prefix}.{key}" if prefix else key, sub)
            else:
                out[prefix] = value

        walk("", self.model_dump(by_alias=True))
        return out


def _section_model(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The params class at dotted ``loc`` (``("train",)`` -> TrainParams); None past a leaf."""
    model: type[BaseModel] = Params
    for part in loc:
        fields = {field.alias or name: field for name, field in model.model_fields.items()}
        annotation = getattr(fields.get(str(part)), "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model


def _unknown_key(loc: tuple[Any, ...]) -> str:
    """What to say about a key the schema does not have: the nearest valid one, or the list."""
    parent = _section_model(loc[:-1])
    if parent is None:
        return "unknown key"
    valid = sorted(field.alias or name for name, field in parent.model_fields.items())
    prefix = "".join(f"{part}." for part in loc[:-1])
    close = difflib.get_close_matches(str(loc[-1]), valid, n=1, cutoff=0.6)
    if close:
        return f"unknown key; did you mean {prefix}{close[0]}?"
    return f"unknown key; valid keys here: {', '.join(prefix + name for name in valid)}"


def _problem(item: Any) -> str:
    kind, value = item["type"], item.get("input")
    if kind == "extra_forbidden":
        return _unknown_key(tuple(item["loc"]))
    if kind == "missing":
        return "required key is missing"
    if kind == "string_type" and isinstance(value, bool | int | float):
        leaf = item["loc"][-1]
        return (
            f"YAML read this value as a {'boolean' if isinstance(value, bool) else 'number'} "
            f'({value!r}), not as text; put it in quotes: {leaf}: "<value as written>"'
        )
    if kind == "value_error" and isinstance(value, dict):  # a section's cross-key rule
        return str(item["msg"]).removeprefix("Value error, ")
    return f"{item['msg']} (got {value!r})"


def _key_of(item: Any) -> str:
    """Dotted key of an error; a section rule's message that opens with ``<key>:`` names it."""
    loc = [str(part).replace("validate_", "validate") for part in item["loc"]]
    if item["type"] == "value_error" and isinstance(item.get("input"), dict):
        head, sep, _ = str(item["msg"]).removeprefix("Value error, ").partition(": ")
        section = _section_model(tuple(loc))
        if sep and section is not None and head in section.model_fields:
            loc.append(head)
    return ".".join(loc) or "<root>"


def _describe(error: ValidationError, path: Path) -> str:
    lines = [f"{path}: invalid configuration"]
    # Unknown keys first: a misspelt key usually also leaves the real one missing.
    items = sorted(error.errors(), key=lambda item: item["type"] != "extra_forbidden")
    for item in items:
        problem = _problem(item)
        key = _key_of(item)
        if key != ".".join(map(str, item["loc"])).replace("validate_", "validate"):
            problem = problem.partition(": ")[2]  # the key moved from the message to the line
        lines.append(f"  {key}: {problem}")
    lines.append(f"Fix the key(s) above in {path}.")
    return "\n".join(lines)


def parse_params(raw: dict[str, Any], source: Path = DEFAULT_PARAMS) -> Params:
    try:
        return Params.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(_describe(error, source)) from None


def load_params(path: str | Path = DEFAULT_PARAMS) -> Params:
    """Load and validate params.yaml; raises :class:`ConfigError` naming the bad key."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: not found. Run from the project root, where params.yaml lives.")
    try:
        raw = load_yaml(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    return parse_params(raw, path)
