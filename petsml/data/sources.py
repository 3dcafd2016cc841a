"""Where the photos come from: one table of sources behind one function, :func:`get_source`.

A source turns ``data.*`` into the manifest (one row per file, the same columns for every
source), says which label rules validation applies, whether the test split is drawn rather
than given, and which class names the split stage records. Everything after the manifest
(quarantine, splits, decoding, training, tracking, serving) is the same for every source.
``data.folder`` is where the photos are read from: the download stage's ``data/raw`` for the
official data, the user's ``<class>/<image>`` folder otherwise. A manifest's (and so a similar
photo index's) ``file`` is relative to it: :func:`photo_path` is the one place that turns such a
``file`` back into the photo, and it never leaves the source's folder.

To add a source: a builder module beside ``folder.py``, a :class:`Source` here, and its row in
:mod:`petsml.catalog.sources` (which names it, so the configuration checks ``data.source``
without importing this module).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from petsml.catalog import sources
from petsml.catalog.refs import resolve
from petsml.data.folder import build_folder_manifest, listed_classes
from petsml.data.manifest import build_manifest
from petsml.data.validation import LabelRules, folder_rules, official_rules
from petsml.errors import PetsError
from petsml.sections import DataParams, ValidateParams


@dataclass(frozen=True)
class Source:
    """One way of getting photos: ``data.source: <name>``."""

    name: str
    manifest: Callable[[DataParams, int], pd.DataFrame]  # (data params, workers) -> manifest
    rules: Callable[[ValidateParams, DataParams, pd.DataFrame], LabelRules]
    draws_test: Callable[[DataParams], bool]  # test drawn by the split stage, not listed
    classes: Callable[[pd.DataFrame], list[str] | None]  # recorded in classes.csv; None: fixed
    folder: Callable[[DataParams], str]  # where its photos live: manifest files are relative to it


OFFICIAL = Source(
    name="oxford-pets",
    manifest=lambda data, workers: build_manifest(data.folder, workers=workers),
    rules=lambda validate, data, manifest: official_rules(validate),
    draws_test=lambda data: False,
    classes=lambda manifest: None,
    folder=lambda data: sources.OFFICIAL_FOLDER,  # the download stage extracts there
)
FOLDER = Source(
    name="folder",
    manifest=lambda data, workers: build_folder_manifest(data.folder, data.test_list, workers),
    rules=lambda validate, data, manifest: folder_rules(
        validate, listed_classes(manifest), data.folder
    ),
    draws_test=lambda data: data.test_list is None,
    classes=listed_classes,
    folder=lambda data: data.folder,  # the user's own, read in place
)


def get_source(name: str) -> Source:
    """The :class:`Source` of ``data.source``; names the valid ones otherwise."""
    row = sources.ROWS.get(name)
    if row is None:
        raise PetsError(
            f"data.source {name!r} is not a source; use one of {', '.join(sources.ROWS)}"
        )
    return resolve(row.source)


def photo_folder(data: DataParams, project_root: str | Path = ".") -> Path:
    """The folder the source's photos live in (``data.folder``, relative to the project root
    unless absolute), resolved: the root every manifest ``file`` is relative to."""
    folder = Path(get_source(data.source).folder(data)).expanduser()
    return (folder if folder.is_absolute() else Path(project_root) / folder).resolve()


def photo_path(data: DataParams, file: str, project_root: str | Path = ".") -> Path | None:
    """The photo a manifest ``file`` names, or None when the name would leave the source's
    folder (``../``, an absolute path, a link pointing out): the web page serves only these."""
    root = photo_folder(data, project_root)
    path = (root / file).resolve()
    return path if path.is_relative_to(root) and path != root else None
