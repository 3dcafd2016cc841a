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

from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    model_validator,
)

from petsml import params_reads
from petsml.catalog import sources, strategies
from petsml.catalog.refs import resolve
from petsml.config_errors import describe
from petsml.config_section import Section
from petsml.errors import PetsError
from petsml.io import load_yaml
from petsml.monitor_section import MonitorParams
from petsml.sections import (
    AdviseParams,
    CompareParams,
    DataIssuesParams,
    DataParams,
    DecodeParams,
    EvaluateParams,
    FeaturesParams,
    MlflowParams,
    ModelParams,
    RegistryParams,
    ServeParams,
    SplitParams,
    TrainParams,
    ValidateParams,
)

DEFAULT_PARAMS = Path("params.yaml")
OFFICIAL_SOURCE = sources.OFFICIAL_SOURCE


class ConfigError(PetsError):
    """A params.yaml value is missing or invalid; the message names the key and the file."""


class _ParamsBase(Section):
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
    monitor: MonitorParams

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
