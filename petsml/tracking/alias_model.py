"""The registered model behind an alias, loaded once, with what it is (for people to read).

``pets similar`` and ``pets web`` always answer with ``models:/<name>@<alias>``, never a file
path: :func:`load_alias_model` resolves the alias, loads that version's pyfunc (its neighbour
index travels inside it) and gathers the version's identity from its tags (strategy, backbone,
test accuracy: what the register stage and the model card record).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from petsml.errors import PetsError
from petsml.tracking.model_card import TABLE_METRICS
from petsml.tracking.model_registry import ModelRegistry, float_or_none, global_uri

IDENTITY_TAGS = ("strategy", "backbone", "task", "git_commit")
SCORE_TAGS = tuple(key for key, _ in TABLE_METRICS)  # the card's table, tagged on the version


@dataclass
class AliasModel:
    """A loaded pyfunc and which registered version it is."""

    name: str
    alias: str
    version: str
    uri: str
    model: Any  # mlflow.pyfunc.PyFuncModel
    tags: dict[str, str] = field(default_factory=dict)
    scores: dict[str, float | None] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        """JSON-ready identity: name, version, alias, strategy, backbone, scores."""
        return {
            "name": self.name,
            "version": self.version,
            "alias": self.alias,
            "uri": self.uri,
            **{key: self.tags.get(key) for key in IDENTITY_TAGS},
            **self.scores,
        }


def load_alias_model(
    registry: ModelRegistry,
    alias: str,
    model_config: dict[str, Any] | None = None,
    *,
    record: dict[str, Any] | None = None,
) -> AliasModel:
    """Load ``models:/<name>@<alias>``; a missing alias is a :class:`PetsError` saying how to
    make one. ``record``: :func:`petsml.tracking.monitor_config.loader_config`'s entries (the
    model records its answers); None: it records nothing."""
    import mlflow.pyfunc

    from petsml.tracking.monitor_config import loader_config

    holder = registry.by_alias(alias)
    if holder is None:
        raise PetsError(
            f"{registry.name} has no '{alias}' alias in {registry.tracking_uri}: run the "
            "pipeline (`dvc repro register`) or `pets promote <version> --reason ...`."
        )
    uri = f"models:/{registry.name}@{alias}"
    # which version answers, for the records the model keeps of its answers (monitor.log)
    identity = {"model_name": registry.name, "model_version": str(holder.version),
                "model_alias": alias}  # fmt: skip
    with global_uri(registry.tracking_uri):  # restored exactly: no MLFLOW_* left behind
        config = {**identity, **(record or loader_config(False, "")), **(model_config or {})}
        model = mlflow.pyfunc.load_model(uri, model_config=config)
    tags = dict(holder.tags or {})
    return AliasModel(
        name=registry.name,
        alias=alias,
        version=str(holder.version),
        uri=uri,
        model=model,
        tags=tags,
        scores={key: float_or_none(tags.get(key)) for key in SCORE_TAGS},
    )
