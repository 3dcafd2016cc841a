"""The typed sections of ``params.yaml`` the built-in stages read, one class per section.

Types, bounds and cross-key rules only: params.yaml owns every value, so no field has a default
(a key missing from the file is an error naming it). :mod:`petsml.config` assembles them, with
one section per registered strategy, into ``Params``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from petsml.catalog import sources, strategies
from petsml.catalog.tta import TTA
from petsml.config_section import Section

OFFICIAL_SOURCE = sources.OFFICIAL_SOURCE
OFFICIAL_FOLDER = sources.OFFICIAL_FOLDER


class Md5Params(Section):
    images: str = Field(pattern=r"^[0-9a-fA-F]{32}$")
    annotations: str = Field(pattern=r"^[0-9a-fA-F]{32}$")


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # a dataset name: a registered model's suffix


class DataParams(Section):
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


class ValidateParams(Section):
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


class SplitParams(Section):
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


class DecodeParams(Section):
    size: int = Field(ge=16, le=1024)
    workers: int = Field(ge=0)


class ModelParams(Section):
    backbone: str
    pretrained: bool
    image_size: int | None = Field(ge=16)
    # An index into the backbone's blocks (negative = from the end), or "auto": the block the
    # advise stage's probe curve found best (reports/advice.json), resolved by
    # petsml.models.early_block before any network is built.
    early_block: int | Literal["auto"]
    precision: Literal["auto", "bf16", "fp32"]


class FeaturesParams(Section):
    # every inference pass (featurize, evaluation, a fine-tune's frozen trunk); auto = by device
    batch_size: int | Literal["auto"]

    @field_validator("batch_size")
    @classmethod
    def _positive(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError("must be a positive integer or auto")
        return value


class TrainParams(Section):
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


class EvaluateParams(Section):
    calibration_bins: int = Field(ge=2)


class CompareParams(Section):
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


class AdviseParams(Section):
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
    C: float = Field(gt=0)  # the backbone ranking's probe (logistic regression)
    backbones: list[str]

    @field_validator("fractions")
    @classmethod
    def _fractions(cls, value: list[float]) -> list[float]:
        if any(not 0 < f <= 1 for f in value) or sorted(set(value)) != value:
            raise ValueError("fractions must increase strictly, each in (0, 1]")
        return value


class DataIssuesParams(Section):
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


class MlflowParams(Section):
    experiment: str


class RegistryParams(Section):
    model_prefix: str
    max_p_value: float = Field(gt=0, le=1)


class ServeParams(Section):
    """Input limits stored with every logged model (its ``model_config``), checked per row."""

    # A 40-megapixel photo decodes to 120 MB of RGB; 20 MiB covers any camera JPEG. max_pixels
    # is the one pixel limit: the validate stage quarantines training photos over it too.
    max_pixels: int = Field(ge=1)
    max_bytes: int = Field(ge=1)
