"""Decode every image once into a memory-mapped uint8 array.

JPEG decoding costs more than a small model's forward pass on a GPU, and every epoch of every
strategy would pay it again. Here each photo is decoded, resized (short side) and centre-cropped
to ``decode.size`` once, in parallel, and every later stage slices the array instead.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from petsml.errors import PetsError
from petsml.io import atomic_dir

log = logging.getLogger(__name__)

ARRAY = "images_u8.npy"
INDEX = "index.csv"


class DecodedCacheError(PetsError):
    """The decoded cache is missing or does not cover the images asked for."""


def _eight_bit(img: Image.Image) -> Image.Image:
    """16/32-bit grey (a 16-bit PNG) rescaled to 8 bits; PIL's convert would clip it to white."""
    if not img.mode.startswith("I"):
        return img
    wide = np.asarray(img, dtype=np.float64)
    top = 65535.0 if img.mode.startswith("I;16") or wide.max(initial=0) > 255 else 255.0
    return Image.fromarray(np.clip(wide * (255.0 / top) + 0.5, 0, 255).astype(np.uint8), "L")


# The decode steps an exported model's pre-processing contract states (petsml/export/contract.py
# reads these, so the contract and the decoder cannot drift apart):
JPEG_DRAFT = True  # JPEG: DCT-domain downscale while decoding (draft), several times faster
REDUCING_GAP = 3.0  # Pillow's resize: box-reduce first by int(ratio / 3.0) when that is > 1


def load_rgb(path: str | Path, size: int) -> np.ndarray:
    """Open any PIL-readable file (PNG/GIF behind .jpg, CMYK, L, RGBA) as size x size RGB."""
    with Image.open(path) as img:
        if img.format == "JPEG" and JPEG_DRAFT:
            img.draft("RGB", (size, size))  # DCT scaling: decode at >= size, much faster
        img = _eight_bit(img).convert("RGB")
        width, height = img.size
        scale = size / min(width, height)
        new = (max(size, round(width * scale)), max(size, round(height * scale)))
        img = img.resize(new, Image.Resampling.BILINEAR, reducing_gap=REDUCING_GAP)
        left = (new[0] - size) // 2
        top = (new[1] - size) // 2
        img = img.crop((left, top, left + size, top + size))
        return np.asarray(img, dtype=np.uint8)


def _decode_chunk(array_path: str, size: int, job: tuple[int, list[str]]) -> int:
    start, paths = job
    out = np.load(array_path, mmap_mode="r+")
    for offset, path in enumerate(paths):
        out[start + offset] = load_rgb(path, size)
    out.flush()
    return len(paths)


def decode_images(
    frame: pd.DataFrame, raw_dir: str | Path, out_dir: str | Path, size: int, workers: int = 0
) -> None:
    """Decode ``frame`` (columns image_id, file) into ``out_dir``; written atomically."""
    frame = frame.drop_duplicates("image_id").reset_index(drop=True)
    raw_dir = Path(raw_dir)
    paths = [str(raw_dir / f) for f in frame["file"]]
    workers = workers or os.cpu_count() or 1
    chunk = 64
    jobs = [(i, paths[i : i + chunk]) for i in range(0, len(paths), chunk)]
    with atomic_dir(out_dir) as tmp:
        array_path = tmp / ARRAY
        np.lib.format.open_memmap(
            array_path, mode="w+", dtype=np.uint8, shape=(len(paths), size, size, 3)
        ).flush()
        with (
            ProcessPoolExecutor(max_workers=workers) as pool,
            tqdm(total=len(paths), desc="decode images", unit="img", mininterval=2) as bar,
        ):
            for done in pool.map(partial(_decode_chunk, str(array_path), size), jobs):
                bar.update(done)
        frame[["image_id"]].assign(row=range(len(frame))).to_csv(tmp / INDEX, index=False)
    log.info("decoded %d images at %dx%d into %s", len(paths), size, size, out_dir)


@dataclass
class DecodedImages:
    """Read side of the cache: ``take(ids)`` returns an (N, S, S, 3) uint8 array."""

    array: np.ndarray
    rows: dict[str, int]

    @classmethod
    def open(cls, root: str | Path) -> DecodedImages:
        root = Path(root)
        if not (root / ARRAY).exists() or not (root / INDEX).exists():
            raise DecodedCacheError(
                f"{root}: decoded image cache missing. Run `dvc repro decode` first."
            )
        index = pd.read_csv(root / INDEX, keep_default_na=False)
        return cls(
            np.load(root / ARRAY, mmap_mode="r"), dict(zip(index.image_id, index.row, strict=True))
        )

    @property
    def size(self) -> int:
        return int(self.array.shape[1])

    def indices(self, image_ids) -> np.ndarray:
        try:
            return np.fromiter((self.rows[i] for i in image_ids), dtype=np.int64)
        except KeyError as error:
            raise DecodedCacheError(
                f"image {error.args[0]!r} is not in the decoded cache; re-run `dvc repro decode`."
            ) from None

    def take(self, image_ids) -> np.ndarray:
        idx = self.indices(image_ids)
        order = np.argsort(idx)  # sorted reads are sequential on the memmap
        out = np.empty((len(idx), *self.array.shape[1:]), dtype=np.uint8)
        out[order] = self.array[idx[order]]
        return out
