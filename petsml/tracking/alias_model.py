"""The registered model behind an alias, loaded once, with what it is (for people to read).

``pets similar`` and ``pets web`` always answer with ``models:/<name>@<alias>``, never a file
path: :func:`load_alias_model` resolves the alias, loads that version's pyfunc (its neighbour
index travels inside it) and gathers the version's identity from its tags (strategy, backbone,
test accuracy: what the register stage and the model card record).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from petsml.errors import PetsError
from petsml.tracking.model_card import TABLE_METRICS
from petsml.tracking.model_registry import ModelRegistry, float_or_none

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


@contextmanager
def _store(uri: str) -> Iterator[None]:
    """MLflow's global tracking/registry URI set to ``uri`` for the block, then restored
    (``set_tracking_uri`` also exports it to the environment: a web server or a test process
    must not keep that)."""
    import mlflow

    env = os.environ.get("MLFLOW_TRACKING_URI")
    tracking, registry = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(tracking)
        mlflow.set_registry_uri(registry)
        if env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = env


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
    with _store(registry.tracking_uri):
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
