"""The data sources ``data.source`` may name: the official archives, or an image folder.

Each row names its implementation (:class:`petsml.data.sources.Source`) by reference, so the
configuration checks the name without importing the data code.
"""

from __future__ import annotations

from dataclasses import dataclass

from petsml import paths

OFFICIAL_SOURCE = "oxford-pets"
OFFICIAL_FOLDER = paths.RAW.as_posix()  # where the download stage extracts the official archives


@dataclass(frozen=True)
class SourceRow:
    name: str
    source: str  # "module:attribute" of its petsml.data.sources.Source
    downloaded: bool  # the download stage fetches it into OFFICIAL_FOLDER (else: data.folder)


ROWS: dict[str, SourceRow] = {
    row.name: row
    for row in (
        SourceRow(OFFICIAL_SOURCE, "petsml.data.sources:OFFICIAL", downloaded=True),
        SourceRow("folder", "petsml.data.sources:FOLDER", downloaded=False),
    )
}
