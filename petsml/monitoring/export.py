"""Feedback photos into the ``data.source: folder`` layout, so the next run trains on them.

Only photos kept by opt-in (``monitor.keep_photos``) exist to export. Each goes to
``<folder>/<label>/<sha256 prefix>.<ext>``, its label the latest feedback given on it: the name
is the content's hash, so a photo exported twice (or sent twice) is one file, and rerunning the
export writes only what is new. A label must be a plain folder name (no ``/``, no leading
``.``): it becomes a class folder, and a name like ``../x`` must not write outside ``folder``.
With ``classes`` given (the model's class names), a label outside them is refused, so a typo
in feedback does not start a new class; leave it None to let feedback add classes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from petsml.errors import PetsError
from petsml.io import atomic_path
from petsml.monitoring.store import MonitorStore

log = logging.getLogger(__name__)

EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "GIF": ".gif", "WEBP": ".webp", "BMP": ".bmp",
              "TIFF": ".tif"}  # fmt: skip
NAME_CHARS = 16  # hex digits of the content hash in a file name


class ExportError(PetsError):
    """The export folder cannot be written."""


@dataclass
class ExportSummary:
    written: list[Path] = field(default_factory=list)
    already_there: int = 0
    refused: dict[str, str] = field(default_factory=dict)  # prediction id -> why

    def line(self) -> str:
        refused = f", {len(self.refused)} refused" if self.refused else ""
        return (f"{len(self.written)} feedback photos written, {self.already_there} already "
                f"there{refused}")  # fmt: skip


def _bad_label(label: str, classes: set[str] | None) -> str | None:
    if not label or "/" in label or "\\" in label or label.startswith(".") or "\0" in label:
        return f"label {label!r} is not a folder name"
    if classes is not None and label not in classes:
        return f"label {label!r} is not one of the model's classes"
    return None


def export_feedback_photos(
    store: MonitorStore, folder: str | Path, classes: Sequence[str] | None = None
) -> ExportSummary:
    """Write every kept feedback photo under ``folder`` as ``<label>/<hash>.<ext>``."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ExportError(f"{folder} is a file: export feedback photos into a folder")
    known = set(classes) if classes is not None else None
    summary = ExportSummary()
    for item in store.feedback_photos():
        why = _bad_label(item.label, known)
        if why:
            summary.refused[item.prediction_id] = why
            continue
        extension = EXTENSIONS.get(item.format.upper(), ".img")
        target = folder / item.label / f"{item.sha256[:NAME_CHARS]}{extension}"
        if target.exists():
            summary.already_there += 1
            continue
        try:
            with atomic_path(target, suffix=extension) as tmp:
                tmp.write_bytes(item.data)
        except OSError as error:
            raise ExportError(f"{target}: cannot write the feedback photo ({error})") from None
        summary.written.append(target)
    log.info("feedback export into %s: %s", folder, summary.line())
    return summary
