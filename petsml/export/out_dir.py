"""Where an export goes: ``--out`` checked before any work, and files others can read.

Light on purpose (no torch, no onnx): ``pets export`` checks ``--out`` before it imports the
exporter, downloads the model and measures it, so a path that cannot hold an export fails in
a moment with one line naming it, not with a traceback a quarter of a minute later.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path

from petsml.errors import PetsError

REPORT_FILE = "export_report.json"


class OutDirError(PetsError):
    """An ``--out`` that cannot hold an export: named with the fix."""


def _nearest_existing(path: Path) -> Path:
    for candidate in [path, *path.parents]:
        if candidate.exists() or candidate.is_symlink():
            return candidate
    return Path(os.sep)


def check_out_dir(out_dir: str | Path) -> Path:
    """Refuse an output path that is a file, a folder holding anything but an earlier export
    (which is replaced), or a path no folder can be created at (``/proc/edge``: the system
    refuses; ``a-file/sub``: a file where a folder should be)."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OutDirError(
            f"{out} is a file, not a folder: give --out a folder path (it is created)."
        )
    if out.is_dir() and any(out.iterdir()) and not (out / REPORT_FILE).is_file():
        raise OutDirError(
            f"{out} is a folder that holds files but no earlier export ({REPORT_FILE}): give "
            "--out a new or empty folder (an earlier export there is replaced)."
        )
    # the export is built in a temp folder beside --out and renamed: probe exactly that
    base = _nearest_existing(out.absolute().parent)
    if not base.is_dir():
        raise OutDirError(
            f"--out {out} cannot be created: {base} is a file, not a folder; give --out a "
            "path under a folder you can write."
        )
    try:
        probe = tempfile.mkdtemp(prefix=".petsml-export-probe.", dir=base)
    except OSError as error:
        raise OutDirError(
            f"--out {out} cannot be created: {base} takes no new folders "
            f"({error.strerror}); give --out a path under a folder you can write."
        ) from None
    shutil.rmtree(probe, ignore_errors=True)
    return out


def current_umask() -> int:
    """The process umask (read by setting it and putting it straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def make_readable(folder: str | Path) -> None:
    """Give an export folder built by ``tempfile`` (0700 folders, 0600 files) the modes any
    other file gets: 0777/0666 less the umask. An export is meant to be copied to a device or
    served to others; ``.onnx`` files written by ONNX already had these modes."""
    mask = current_umask()
    root = Path(folder)
    for path in [root, *root.rglob("*")]:
        if path.is_symlink():
            continue
        full = 0o777 if path.is_dir() or path.stat().st_mode & stat.S_IXUSR else 0o666
        path.chmod(full & ~mask)
