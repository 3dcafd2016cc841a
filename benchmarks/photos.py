"""Photos for the GPU-sized benchmarks: a folder's JPEGs, or synthetic ones made on the spot.

Synthetic photos are smooth random fields saved as JPEG, so they decode like photos rather than
like noise; throughput does not depend on what they show, and no network is needed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


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
