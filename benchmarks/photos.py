"""Photos for the benchmarks: a folder's JPEGs, the official layout as a table, or synthetic
ones made on the spot.

Synthetic photos are smooth random fields saved as JPEG, so they decode like photos rather than
like noise; throughput does not depend on what they show, and no network is needed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from petsml.data.breeds import CLASS_ID, breed_of, species_of


def synthetic_photos(folder: Path, n: int, seed: int = 0, size: tuple[int, int] = (320, 400)):
    """``n`` JPEGs of ``size`` (width, height) px built from upsampled low-resolution noise."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(n):
        small = rng.integers(0, 256, (10, 8, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize(size, Image.Resampling.BICUBIC)
        path = folder / f"photo_{i:05d}.jpg"
        img.save(path, quality=90)
        files.append(path)
    return files


def photo_files(folder: str | None, tmp: Path, n: int) -> list[Path]:
    """The JPEGs under ``folder``, or ``n`` synthetic ones under ``tmp`` when it is None."""
    if folder:
        return sorted(Path(folder).rglob("*.jpg"))
    return synthetic_photos(tmp / "photos", n)


def photo_frame(folder: Path) -> pd.DataFrame:
    """Every ``images/*.jpg`` with its breed and label (the official file naming)."""
    files = sorted((folder / "images").glob("*.jpg"))
    if not files:
        raise SystemExit(f"{folder}/images holds no .jpg photos (the official layout)")
    frame = pd.DataFrame({"image_id": [p.stem for p in files]})
    frame["file"] = [f"images/{p.name}" for p in files]
    frame["breed"] = frame.image_id.map(breed_of)
    frame["class_id"] = frame.breed.map(CLASS_ID).astype(int)
    frame["species"] = frame.breed.map(species_of)
    frame["species_id"] = (frame.species == "dog").astype(int)
    frame["sha256"] = ""
    return frame
