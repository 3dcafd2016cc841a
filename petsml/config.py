"""Typed view of ``params.yaml``, the pipeline's single source of configuration.

Every stage and flow loads its settings through :func:`load_params`, so a typo or a value out of
range fails at start-up with the dotted key that is wrong, not deep inside a training loop.

params.yaml owns every value: the models here hold types, bounds and cross-key rules, and no
defaults (a key missing from the file is an error naming it). Names are checked against the
registries of :mod:`petsml.catalog` - strategies, data sources, test-time augmentation modes -
and each registered strategy with settings gets its own section (``Params`` is built from the
strategy registry, so a strategy's section is declared by its row, nowhere else).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from petsml import params_reads
from petsml.catalog import sources, strategies
from petsml.catalog.refs import resolve
from petsml.catalog.tta import TTA
from petsml.config_errors import describe
from petsml.errors import PetsError
from petsml.io import load_yaml

DEFAULT_PARAMS = Path("params.yaml")
OFFICIAL_SOURCE = sources.OFFICIAL_SOURCE
OFFICIAL_FOLDER = sources.OFFICIAL_FOLDER


class ConfigError(PetsError):
    """A params.yaml value is missing or invalid; the message names the key and the file."""


class _Section(BaseModel):
    """A params.yaml section; each knows its dotted key so reads can be recorded
    (:mod:`petsml.params_reads`, only when ``PETS_PARAMS_LOG`` is set)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    _key: str = PrivateAttr(default="")

    def __getattribute__(self, name: str) -> Any:
        value = super().__getattribute__(name)
        if params_reads.READS is not None and not name.startswith("_"):
            fields = type(self).model_fields
            if name in fields and not isinstance(value, _Section):
                params_reads.record(_dotted(self, fields[name].alias or name))
        return value

    def model_dump(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        if params_reads.READS is not None:  # the whole section is read
            for key in _leaves(self):
                params_reads.record(key)
        return super().model_dump(*args, **kwargs)

    def _with_keys(self, key: str = "") -> None:
        """Name this section ``key`` and every section inside it (after parsing)."""
        self._key = key
        for name, field in type(self).model_fields.items():
            value = super().__getattribute__(name)
            if isinstance(value, _Section):
                alias = field.alias or name
                value._with_keys(f"{key}.{alias}" if key else alias)


def _dotted(section: _Section, name: str) -> str:
    key = section.__pydantic_private__.get("_key", "") if section.__pydantic_private__ else ""
    return f"{key}.{name}" if key else name


def _leaves(section: _Section) -> list[str]:
    out = []
    for name, field in type(section).model_fields.items():
        value = BaseModel.__getattribute__(section, name)
        if isinstance(value, _Section):
            out += _leaves(value)
        else:
            out.append(_dotted(section, field.alias or name))
    return out


class Md5Params(_Section):
    images: str = Field(pattern=r"^[0-9a-fA-F]{32}$")
    annotations: str = Field(pattern=r"^[0-9a-fA-F]{32}$")


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # a dataset name: a registered model's suffix


class DataParams(_Section):
    task: Literal["breed", "species"]
    base_url: str
    md5: Md5Params
    retries: int = Field(ge=0)
    timeout_s: float = Field(gt=0)
    # oxford-pets: the official archives, downloaded into data/raw. folder: your own photos in
    # the ImageFolder layout, <data.folder>/<class>/<image>. data.folder is a DVC dep of the
    # stages that read photos (dvc.yaml interpolates it), so adding photos re-runs what changed.
    source: str  # a name of petsml.catalog.sources
    folder: str
    name: str | None  # the dataset's name; None = the folder's name (source folder)
    test_list: str | None  # source folder: a file in data.folder naming the test images

    @field_validator("source")
    @classmethod
    def _known_source(cls, value: str) -> str:
        if value not in sources.ROWS:
            raise ValueError(
                f"{value!r} is not a data source; use one of {', '.join(sources.ROWS)}"
            )
        return value

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
                "folder: data.source is folder but data.folder is the download stage's "
                f"{OFFICIAL_FOLDER}: set it to your photos' folder (<class>/<image> inside), "
                "relative to the project root or absolute"
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
    require_all_breeds: bool
    min_images_per_breed: int = Field(ge=0)
    max_images_per_breed: int = Field(ge=1)
    min_width: int = Field(ge=1)
    min_height: int = Field(ge=1)
    # data.source: folder: the bounds per class folder (the *_per_breed ones are the official
    # data's). 5 = at least one photo each for train, validation and a drawn test split.
    min_images_per_class: int = Field(ge=1)
    max_images_per_class: int | None = Field(ge=1)  # None = no upper bound

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
    val_fraction: float = Field(gt=0, lt=1)
    seed: int
    # data.source: folder without data.test_list: a stratified slice of each class is the test set
    test_fraction: float = Field(gt=0, lt=1)

    @model_validator(mode="after")
    def _room_for_train(self) -> SplitParams:
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError(
                "test_fraction: split.val_fraction + split.test_fraction must stay below 1 "
                "(images are left to train on)"
            )
        return self


class DecodeParams(_Section):
    size: int = Field(ge=16, le=1024)
    workers: int = Field(ge=0)


class ModelParams(_Section):
    backbone: str
    pretrained: bool
    image_size: int | None = Field(ge=16)
    # An index into the backbone's blocks (negative = from the end), or "auto": the block the
    # advise stage's probe curve found best (reports/advice.json), resolved by
    # petsml.models.early_block before any network is built.
    early_block: int | Literal["auto"]
    precision: Literal["auto", "bf16", "fp32"]


class FeaturesParams(_Section):
    # every inference pass (featurize, evaluation, a fine-tune's frozen trunk); auto = by device
    batch_size: int | Literal["auto"]

    @field_validator("batch_size")
    @classmethod
    def _positive(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError("must be a positive integer or auto")
        return value


class TrainParams(_Section):
    strategies: list[str]  # names of petsml.catalog.strategies
    device: Literal["auto", "cpu", "cuda", "mps"]
    seed: int
    epochs: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    patience: int = Field(ge=1)
    warmup_epochs: int = Field(ge=0)
    prefetch: int = Field(ge=0)
    compile: bool
    # data-parallel under torchrun (petsml.training.distributed): auto = when launched so
    distributed: Literal["auto", "on", "off"]
    # the shipped model's test-time augmentation, saved in model.pt (evaluation and serving alike)
    tta: str  # a mode of petsml.catalog.tta

    @field_validator("strategies")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("list at least one strategy")
        if len(set(value)) != len(value):
            raise ValueError("strategies are listed more than once")
        unknown = [name for name in value if name not in strategies.rows()]
        if unknown:
            raise ValueError(f"unknown strategy {unknown[0]!r}; use one of "
                             f"{', '.join(strategies.names())}")  # fmt: skip
        return value

    @field_validator("tta")
    @classmethod
    def _known_tta(cls, value: str) -> str:
        if value not in TTA:
            raise ValueError(
                f"{value!r} is not a test-time augmentation; use one of {', '.join(TTA)}"
            )
        return value


class LinearParams(_Section):
    C: list[float] = Field(min_length=1)


class FinetuneTopParams(_Section):
    unfreeze_blocks: int = Field(ge=1)
    lr: float = Field(gt=0)
    backbone_lr_scale: float = Field(gt=0)
    weight_decay: float = Field(ge=0)
    cache_flip: Literal["map", "image", "none"]
    head_init: Literal["probe", "random"]
    probe_C: list[float] = Field([0.01, 0.1, 1.0], min_length=1)


class FinetuneFullParams(_Section):
    lr: float = Field(gt=0)
    layer_decay: float = Field(gt=0, le=1)
    weight_decay: float = Field(ge=0)
    head_init: Literal["probe", "random"]
    probe_C: list[float] = Field([0.01, 0.1, 1.0], min_length=1)


class ScratchParams(_Section):
    lr: float = Field(gt=0)
    weight_decay: float = Field(ge=0)


class EvaluateParams(_Section):
    calibration_bins: int = Field(ge=2)


class CompareParams(_Section):
    """The ``compare`` stage's ONNX columns: each strategy exported and measured in a temporary
    folder (petsml.compare_onnx). Off by default: an export, a parity pass over the test split
    and the batch-1 timings cost more than the rest of the stage (21 s for the e2e test
    pipeline's three Lite0 models at 64 px on the 2-core project machine); int8 adds quantization
    calibrated on ``calibration`` train photos."""

    onnx: bool  # ONNX fp32 size, batch-1 p50 latency and top-1 agreement with PyTorch
    onnx_int8: bool  # + ONNX int8 size, p50 latency and accuracy drop (points)
    calibration: int = Field(ge=1)  # training photos the int8 activation ranges come from
    latency_runs: int = Field(ge=1)  # ONNX: timed batch-1 calls per model after warm-up
    # PyTorch latency columns: seconds for the whole table, shared by its distinct networks
    latency_budget_s: float = Field(gt=0)

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

    small_below: int = Field(ge=1)  # median train images per class below this = small
    alpha: float = Field(gt=0, lt=1)  # significance an earlier block must reach = unlike
    # the ImageNet classifier's mean top-1 probability from which photos count as ImageNet-like
    imagenet_confidence: float = Field(ge=0, le=1)
    fractions: list[float] = Field(min_length=2)
    max_train_per_class: int | None = Field(ge=1)  # None = every train image
    max_val_per_class: int | None = Field(ge=1)  # None = every validation image
    seed: int
    C: float = Field(0.1, gt=0)  # the backbone ranking's probe (logistic regression)
    backbones: list[str]

    @field_validator("fractions")
    @classmethod
    def _fractions(cls, value: list[float]) -> list[float]:
        if any(not 0 < f <= 1 for f in value) or sorted(set(value)) != value:
            raise ValueError("fractions must increase strictly, each in (0, 1]")
        return value


class DataIssuesParams(_Section):
    """The ``data_issues`` stage: what is wrong with the data, found from the cached features
    (petsml.data_issues says how each kind is found and why each threshold is what it is)."""

    # a near-duplicate across splits: drop the train/val copy (the test one stays) | fail the stage
    on_leak: Literal["drop", "fail"]
    exclude_label_issues: bool  # true: likely label errors are left out of advise and train
    duplicate_cosine: float = Field(gt=0, lt=1)  # candidate pairs: penultimate cosine at least
    duplicate_hash_bits: int = Field(ge=0, le=32)  # confirmed: pHashes differ in at most
    folds: int = Field(ge=2)  # label errors: out-of-fold probe over train+val
    C: float = Field(gt=0)  # the probe's inverse regularisation
    seed: int
    neighbours: int = Field(ge=1)  # outliers: mean cosine distance to this many nearest photos
    outlier_z: float = Field(gt=0)  # robust z-score from which a photo is low-density
    blur_above: float = Field(gt=0, lt=1)  # blur effect (0 sharp .. 1 flat) above this = blurry
    dark_below: float = Field(gt=0, lt=1)  # brightest 1 % of pixels under this share = dark
    tiny_upscale: float = Field(gt=1)  # short side needing more upscaling to decode.size = tiny
    max_shown: int = Field(ge=1)  # the HTML report's photos per kind (the JSON lists all)


class MlflowParams(_Section):
    experiment: str


class RegistryParams(_Section):
    model_prefix: str
    max_p_value: float = Field(gt=0, le=1)


class ServeParams(_Section):
    """Input limits stored with every logged model (its ``model_config``), checked per row."""

    # A 40-megapixel photo decodes to 120 MB of RGB; 20 MiB covers any camera JPEG.
    max_pixels: int = Field(ge=1)
    max_bytes: int = Field(ge=1)


class _ParamsBase(_Section):
    """The sections every pipeline has; :data:`Params` adds one per registered strategy."""

    data: DataParams
    validate_: ValidateParams = Field(alias="validate")
    split: SplitParams
    decode: DecodeParams
    model: ModelParams
    features: FeaturesParams
    train: TrainParams
    evaluate: EvaluateParams
    compare: CompareParams
    advise: AdviseParams
    data_issues: DataIssuesParams
    mlflow: MlflowParams
    registry: RegistryParams
    serve: ServeParams

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _listed_strategies_have_settings(self) -> _ParamsBase:
        missing = [
            name
            for name in self.train.strategies
            if strategies.get(name).settings is not None and getattr(self, name) is None
        ]
        if missing:
            raise ValueError(
                f"train: {', '.join(missing)} listed in train.strategies without a section of "
                f"settings: add a {missing[0]}: section to params.yaml"
            )
        return self

    @property
    def validate_params(self) -> ValidateParams:
        return self.validate_

    @property
    def registered_model_name(self) -> str:
        """``<prefix>-<task>`` for the official data; ``<prefix>-<dataset name>`` for a folder."""
        if self.data.source == OFFICIAL_SOURCE:
            return f"{self.registry.model_prefix}-{self.data.task}"
        return f"{self.registry.model_prefix}-{self.data.dataset_name}"

    def settings_of(self, strategy: str) -> BaseModel | None:
        """``strategy``'s section (None when its row declares none, or it is absent)."""
        return getattr(self, strategy, None) if strategies.get(strategy).settings else None

    def flat(self) -> dict[str, Any]:
        """Dotted key -> value, the shape MLflow params and DVC ``-S`` overrides use."""
        out: dict[str, Any] = {}

        def walk(prefix: str, value: Any) -> None:
            if isinstance(value, dict):
                for key, sub in value.items():
                    walk(f"{prefix}.{key}" if prefix else key, sub)
            else:
                out[prefix] = value

        walk("", self.model_dump(by_alias=True, exclude_none=False))
        return out


def _with_strategy_sections() -> type[_ParamsBase]:
    """``Params``: the base sections plus an optional one per registered strategy that has
    settings, typed by its row's settings model (absent = None: a strategy not listed in
    ``train.strategies`` needs no section)."""
    fields: dict[str, Any] = {}
    for row in strategies.rows().values():
        if row.settings is not None:
            fields[row.name] = (resolve(row.settings) | None, None)
    return create_model("Params", __base__=_ParamsBase, **fields)


def parse_params(raw: dict[str, Any], source: Path = DEFAULT_PARAMS) -> Params:
    try:
        with params_reads.paused():  # validators read every value: not the stage's reads
            params = Params.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(describe(Params, error, source)) from None
    params._with_keys()
    return params


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


Params = _with_strategy_sections()
