"""Rows that installed packages add to a registry, through Python entry points.

A package declares ``[project.entry-points."petsml.strategies"] mine = "my_pkg.rows:MINE"``
(or ``petsml.backbone_families``); the registry loads every entry of its group when it is first
asked, checks each is a row of its kind named as the entry, and the rows then run under
``dvc repro`` like the built-in ones (the stages are subprocesses of the same environment).
"""

from __future__ import annotations

import importlib.metadata
from typing import Any

from petsml.errors import PetsError


class PluginError(PetsError):
    """An installed plug-in cannot be loaded, or names something that is not a registry row."""


def installed(group: str, kind: type, name_of: Any = lambda row: row.name) -> list[Any]:
    """The rows the entry points of ``group`` name, each an instance of ``kind`` whose name
    (``name_of(row)``) is the entry point's name."""
    rows = []
    for entry in importlib.metadata.entry_points(group=group):
        try:
            row = entry.load()
        except Exception as error:  # whatever the plug-in raises, name the plug-in
            raise PluginError(f"{group} plug-in {entry.name!r} ({entry.value}) failed to "
                              f"load: {error}") from error  # fmt: skip
        if not isinstance(row, kind) or name_of(row) != entry.name:
            raise PluginError(
                f"{group} plug-in {entry.name!r} ({entry.value}) must name a {kind.__name__} "
                f"called {entry.name!r}"
            )
        rows.append(row)
    return rows
