"""The page's second view: every registered version with its aliases and scores, and the last
run's strategy comparison.

The comparison comes from ``reports/comparison.json`` when the project has one (the strategy
comparison report), else from ``reports/metrics.json`` (what the evaluate stage measured for
every strategy of the last run). Both become rows of ``{"strategy", <metric>: value, ...}``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from petsml import paths
from petsml.io import read_json
from petsml.tracking.alias_model import IDENTITY_TAGS, SCORE_TAGS
from petsml.tracking.model_registry import (
    REGISTRATION_TAG,
    STARTED,
    ModelRegistry,
    float_or_none,
)

log = logging.getLogger(__name__)

COMPARISON = paths.REPORTS / "comparison.json"
# The versions table's columns, in order: the metrics come from the metrics registry (every row
# tagged on a registered version), so a new metric is a new column with no edit here or in the page.
VERSION_COLUMNS = ("version", "aliases", "strategy", "backbone", *SCORE_TAGS, "gate")


def versions(registry: ModelRegistry) -> list[dict[str, Any]]:
    """Newest first: number, aliases, identity tags, scores, gate decision."""
    aliases: dict[str, list[str]] = {}
    for alias, number in registry.aliases().items():
        aliases.setdefault(str(number), []).append(alias)
    out = []
    for version in sorted(registry.versions(), key=lambda v: -int(v.version)):
        tags = dict(version.tags or {})
        out.append({
            "version": str(version.version),
            "aliases": sorted(aliases.get(str(version.version), [])),
            **{key: tags.get(key) for key in IDENTITY_TAGS},
            **{key: float_or_none(tags.get(key)) for key in SCORE_TAGS},
            "gate": tags.get("gate.decision")
            or ("unfinished: `dvc repro register`" if tags.get(REGISTRATION_TAG) == STARTED
                else None),
        })  # fmt: skip
    return out


def _rows(data: Any) -> list[dict[str, Any]]:
    """Rows from a list of records or a ``{strategy: {metric: value}}`` mapping."""
    if isinstance(data, dict):
        for key in ("rows", "strategies", "table"):
            if isinstance(data.get(key), list | dict):
                return _rows(data[key])
        return [{"strategy": str(name), **values} for name, values in data.items()
                if isinstance(values, dict)]  # fmt: skip
    if isinstance(data, list):
        return [dict(row) for row in data if isinstance(row, dict)]
    return []


def comparison(root: Path) -> dict[str, Any]:
    """The last run's strategies side by side, and which file they come from."""
    for source in (COMPARISON, paths.METRICS):
        path = root / source
        if not path.is_file():
            continue
        try:
            rows = _rows(read_json(path))
        except (OSError, ValueError) as error:
            log.warning("%s unreadable: %s", path, error)
            continue
        if rows:
            return {"source": source.as_posix(), "rows": rows}
    return {"source": None, "rows": []}


def registry_view(registry: ModelRegistry, root: str | Path) -> dict[str, Any]:
    return {
        "name": registry.name,
        "version_columns": list(VERSION_COLUMNS),
        "versions": versions(registry),
        # what a killed register stage left (a version without its gate or aliases), in words
        "notes": [registry.unfinished_note(v) for v in registry.unfinished()],
        "comparison": comparison(Path(root)),
    }
