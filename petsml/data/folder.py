"""Your own photos in the ``ImageFolder`` layout: ``<folder>/<class>/<image>``, one row each.

The manifest has the same columns as the official one (``petsml.data.manifest.COLUMNS``), so
validation, quarantine, splitting and decoding treat both alike. The class is the first folder
under the root; class ids follow the sorted class names, ``image_id`` and ``file`` are the path
relative to the root (unique by construction). A photo in a sub-folder of a class folder
(``pug/nested/shiba_inu_1.jpg``) has no sure label: it gets a row, is named in a warning here
and is quarantined as ``nested_folder`` by the validate stage, never trained on as a pug.
Files whose extension is not an image format PIL knows are stray files (``listed`` False): one
that does not decode is quarantined as ``not_an_image``, as on the official data. An optional
test list, a text file inside the folder with one ``<class>/<file>`` a line, fixes the test
images; the others are ``trainval``. Hidden files and folders (``.DS_Store``, ``.git``) are
skipped.
"""

from __future__ import annotations

import logging
from pathlib import Path, PurePosixPath

import pandas as pd
from PIL import Image

from petsml.data.manifest import COLUMNS, with_file_facts
from petsml.errors import PetsError

log = logging.getLogger(__name__)

MIN_CLASSES = 2


class FolderSourceError(PetsError):
    """The image folder (or its test list) cannot be read as ``<class>/<image>``."""


def _image_suffixes() -> frozenset[str]:
    return frozenset(ext.lower() for ext in Image.registered_extensions())


def _hidden(relative: PurePosixPath) -> bool:
    return any(part.startswith(".") for part in relative.parts)


def class_folders(root: Path) -> list[str]:
    """Sorted class names (the non-hidden sub-folders of ``root``); checks the layout."""
    if not root.is_dir():
        what = "is not a folder" if root.exists() else "does not exist"
        raise FolderSourceError(
            f"data.folder {root} {what}. Point data.folder in params.yaml at a folder of "
            "<class>/<image> files (relative to the project root, or absolute)."
        )
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < MIN_CLASSES:
        found = f"only {classes[0]!r}" if classes else "none"
        raise FolderSourceError(
            f"data.folder {root}: {len(classes)} class folder(s) ({found}); a classifier needs at "
            f"least {MIN_CLASSES}. Put each class's photos in its own sub-folder: "
            f"{root}/<class>/<image>."
        )
    return classes


def read_test_list(root: Path, name: str, classes: list[str]) -> set[str]:
    """Relative paths named by the test list ``root/name`` (blank lines and ``#`` skipped)."""
    path = root / name
    if not path.is_file():
        raise FolderSourceError(
            f"{path}: the test list data.test_list names is missing. Create it (one "
            "<class>/<file> a line) or set data.test_list: null to draw a stratified test split."
        )
    known = set(classes)
    entries: set[str] = set()
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        relative = PurePosixPath(entry)
        if relative.is_absolute() or ".." in relative.parts or len(relative.parts) < 2:
            raise FolderSourceError(
                f"{path}:{number}: {entry!r} is not <class>/<file> relative to {root}."
            )
        if relative.parts[0] not in known:
            raise FolderSourceError(
                f"{path}:{number}: {entry!r}: no class folder {relative.parts[0]!r} in {root} "
                f"(classes: {', '.join(classes)}). Fix the line or the folder name."
            )
        entries.add(relative.as_posix())
    return entries


def build_folder_manifest(
    root: str | Path, test_list: str | None = None, workers: int = 0
) -> pd.DataFrame:
    """Manifest of an image folder: every file a row, measured as the official files are."""
    root = Path(root)
    classes = class_folders(root)
    class_id = {name: index for index, name in enumerate(classes)}
    tests = read_test_list(root, test_list, classes) if test_list else set()
    suffixes = _image_suffixes()
    files = sorted(
        PurePosixPath(p.relative_to(root).as_posix()) for p in root.rglob("*") if p.is_file()
    )
    files = [f for f in files if not _hidden(f) and f.as_posix() != test_list]
    on_disk = {f.as_posix() for f in files}
    rows = []
    for relative in files:
        in_class = len(relative.parts) > 1 and relative.parts[0] in class_id
        is_image = relative.suffix.lower() in suffixes
        listed = in_class and is_image
        rows.append(
            {
                "file": relative.as_posix(),
                "breed": relative.parts[0] if in_class else "",
                "listed": listed,
                "split": ("test" if relative.as_posix() in tests else "trainval")
                if listed
                else "unlisted",
            }
        )
    _warn_about_sub_folders(root, [row["file"] for row in rows if row["listed"]])
    empty = sorted(set(classes) - {row["breed"] for row in rows if row["listed"]})
    if empty:
        raise FolderSourceError(
            f"data.folder {root}: class folder(s) {', '.join(empty)} hold no image files "
            f"(extensions PIL reads: .jpg, .png, ...). Add photos or remove the folder(s)."
        )
    for entry in sorted(tests - on_disk):  # named by the test list, no such file
        rows.append({"file": entry, "breed": PurePosixPath(entry).parts[0], "listed": True,
                     "split": "test"})  # fmt: skip
    table = pd.DataFrame(rows, columns=["file", "breed", "listed", "split"])
    table["image_id"] = table["file"]
    table["class_id"] = table["breed"].map(lambda b: class_id.get(b, -1)).astype(int)
    table["species"] = ""
    table["exists"] = table["file"].isin(on_disk)
    table = with_file_facts(table, root, workers, f"listed in {test_list} but no file in {root}")
    log.info(
        "manifest of %s: %d classes, %d files (%d in the test list, %d stray)",
        root,
        len(classes),
        len(files),
        len(tests),
        int((~table["listed"]).sum()),
    )
    return table[COLUMNS].reset_index(drop=True)


def _warn_about_sub_folders(root: Path, files: list[str]) -> None:
    """Name every sub-folder of a class folder holding photos (the validate stage quarantines
    them as ``nested_folder``), so the run says so where the photos are counted."""
    counts: dict[str, int] = {}
    for file in files:
        parts = PurePosixPath(file).parts
        if len(parts) > 2:
            folder = "/".join(parts[:-1])
            counts[folder] = counts.get(folder, 0) + 1
    if counts:
        listed = ", ".join(f"{folder}/ ({n})" for folder, n in sorted(counts.items()))
        log.warning(
            "data.folder %s: photos in sub-folders of class folders are not trained on "
            "(quarantined as nested_folder): %s. A photo's class is the folder directly under "
            "data.folder: move each into the folder of the class it shows.",
            root,
            listed,
        )


def listed_classes(manifest: pd.DataFrame) -> list[str]:
    """Class names by class id, as :func:`build_folder_manifest` numbered them."""
    listed = manifest.loc[manifest["listed"].astype(bool), ["class_id", "breed"]]
    pairs = listed.drop_duplicates().sort_values("class_id")
    return pairs["breed"].astype(str).tolist()
