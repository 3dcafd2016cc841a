"""One table, one row per image: what the annotations say and what the file really is.

Validation, splitting and every loader read this table rather than the folder, so what a file
is (format, mode, size, hash, decodable or not) is measured once, in parallel, and recorded.
Files on disk that the list omits, and list entries without a file, become rows too: nothing is
dropped silently.
"""

from __future__ import annotations

import hashlib
import logging
import os
import warnings
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
from PIL import Image
from tqdm import tqdm

from petsml.data.breeds import CLASS_ID, breed_of
from petsml.errors import PetsError

log = logging.getLogger(__name__)

COLUMNS = [
    "image_id", "file", "breed", "class_id", "species", "split", "listed", "exists",
    "decodable", "format", "mode", "width", "height", "bytes", "sha256", "error",
]  # fmt: skip
SPECIES_CODE = {"1": "cat", "2": "dog"}


FACT_COLUMNS = ["decodable", "format", "mode", "width", "height", "bytes", "sha256", "error"]


class AnnotationError(PetsError):
    """An annotation file is missing or malformed; the message names the file and line."""


@dataclass
class FileFacts:
    decodable: bool
    format: str
    mode: str
    width: int
    height: int
    bytes: int
    sha256: str
    error: str


# Above this many pixels a JPEG is decoded at 1/8 scale (``draft``): every byte of the stream is
# still read, so truncation shows, at 1/64 of the memory (a 144 MP photo: 7 MB, not 430 MB).
REDUCED_DECODE_PIXELS = 50_000_000


@contextmanager
def _pixel_limit_is_ours() -> Iterator[None]:
    """PIL's own bomb heuristics off while measuring: it would print DecompressionBombWarning
    mid-stage (> 89 MP) or refuse to say the size (> 179 MP). The limit that counts is
    ``serve.max_pixels``, which the validate stage applies from the size recorded here."""
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def inspect_file(path: str | Path) -> FileFacts:
    """Hash the bytes and decode fully: ``verify()`` alone misses truncated JPEGs."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:  # unreadable (permissions, I/O error): a fact, not a crash
        return FileFacts(False, "", "", 0, 0, 0, "", f"unreadable: {type(error).__name__}: {error}")
    digest = hashlib.sha256(data).hexdigest()
    try:
        with _pixel_limit_is_ours(), Image.open(path) as img:
            fmt, mode, (w, h) = img.format or "", img.mode, img.size
            if w * h > REDUCED_DECODE_PIXELS:
                img.draft("RGB", (max(1, w // 8), max(1, h // 8)))  # JPEG only; others: no-op
            img.load()
            img.convert("RGB")
        return FileFacts(True, fmt, mode, w, h, len(data), digest, "")
    except Exception as error:  # noqa: BLE001 - every decoder failure is a fact to record
        return FileFacts(False, "", "", 0, 0, len(data), digest, f"{type(error).__name__}: {error}")


def read_annotation_list(path: Path) -> pd.DataFrame:
    """Parse ``list.txt``/``trainval.txt``/``test.txt``: ``Name CLASS-ID SPECIES BREED-ID``."""
    if not path.exists():
        raise AnnotationError(f"{path}: missing. Re-run the download stage (dvc repro download).")
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 4 or not all(p.isdigit() for p in parts[1:]):
            raise AnnotationError(
                f"{path}:{number}: expected 'Name CLASS-ID SPECIES BREED-ID', got {line!r}"
            )
        rows.append((parts[0], int(parts[1]) - 1, SPECIES_CODE.get(parts[2], parts[2])))
    return pd.DataFrame(rows, columns=["image_id", "class_id", "species"])


def _listed_frame(annotations: Path) -> pd.DataFrame:
    listed = read_annotation_list(annotations / "list.txt")
    trainval = set(read_annotation_list(annotations / "trainval.txt")["image_id"])
    test = set(read_annotation_list(annotations / "test.txt")["image_id"])

    def which(image_id: str) -> str:
        # An id in both lists is recorded as such, so validation can reject the leak.
        return "+".join(n for n, ids in (("trainval", trainval), ("test", test)) if image_id in ids)

    listed["split"] = listed["image_id"].map(which).replace("", "unassigned")
    listed["breed"] = listed["image_id"].map(breed_of)
    listed["listed"] = True
    listed["file"] = "images/" + listed["image_id"] + ".jpg"
    return listed


def build_manifest(raw: str | Path, workers: int = 0) -> pd.DataFrame:
    """Manifest of an extracted dataset (``raw/images``, ``raw/annotations``)."""
    raw = Path(raw)
    listed = _listed_frame(raw / "annotations")
    on_disk = sorted(p for p in (raw / "images").iterdir() if p.is_file())
    disk_files = {f"images/{p.name}" for p in on_disk}
    known = set(listed["file"])
    extra = sorted(disk_files - known)
    unlisted = pd.DataFrame({"file": extra})
    unlisted["image_id"] = unlisted["file"].map(lambda f: Path(f).stem)
    unlisted["breed"] = unlisted["image_id"].map(breed_of)
    unlisted["class_id"] = unlisted["breed"].map(lambda b: CLASS_ID.get(b, -1))
    unlisted["species"] = ""
    unlisted["split"] = "unlisted"
    unlisted["listed"] = False
    table = pd.concat([listed, unlisted], ignore_index=True)
    table["class_id"] = table["class_id"].astype(int)  # an empty `unlisted` frame makes it float
    table["exists"] = table["file"].isin(disk_files)

    table = with_file_facts(
        table, raw, workers, "listed in annotations/list.txt but no file in images/"
    )
    missing = ~table["exists"]
    log.info(
        "manifest: %d rows (%d listed, %d unlisted files, %d listed without file)",
        len(table),
        int(table["listed"].sum()),
        len(extra),
        int(missing.sum()),
    )
    return table[COLUMNS]


def with_file_facts(
    table: pd.DataFrame, root: Path, workers: int, missing_error: str
) -> pd.DataFrame:
    """``table`` (columns file, exists, ...) joined with :func:`inspect_file` of each present
    file under ``root``, measured in parallel; rows without a file get ``missing_error``."""
    present = table.loc[table["exists"], "file"].tolist()
    workers = workers or os.cpu_count() or 1
    paths = [str(root / f) for f in present]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        facts = list(
            tqdm(
                pool.map(inspect_file, paths, chunksize=32),
                total=len(paths),
                desc="inspect images",
                unit="img",
                mininterval=2,
            )
        )
    facts_frame = pd.DataFrame([asdict(f) for f in facts], index=present, columns=FACT_COLUMNS)
    table = table.join(facts_frame, on="file")
    missing = ~table["exists"]
    table.loc[missing, "decodable"] = False
    table.loc[missing, "error"] = missing_error
    table["decodable"] = table["decodable"].astype(bool)
    for col in ("width", "height", "bytes"):
        table[col] = table[col].fillna(0).astype(int)
    for col in ("format", "mode", "sha256", "error"):
        table[col] = table[col].fillna("")
    return table


def read_manifest(path: str | Path) -> pd.DataFrame:
    return pd.read_csv(
        path,
        keep_default_na=False,
        # breed as text: a folder's classes may be named 0..9 (pandas would read numbers)
        dtype={
            "sha256": str,
            "format": str,
            "mode": str,
            "error": str,
            "species": str,
            "breed": str,
            "image_id": str,
            "file": str,
        },  # fmt: skip
    )
