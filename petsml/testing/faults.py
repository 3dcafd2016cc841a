"""Faults to plant in a data set, so the data_issues detectors can be checked against the truth.

Shared by the tests (generated photos) and ``benchmarks/data_issues.py`` (real ones):

- :func:`edited_copy`: a near-duplicate: resized to 0.8x, cropped by 10 % (5 % off each side),
  mirrored, re-encoded at JPEG quality 60 - any of the four, or all;
- :func:`non_pet_images`: ten pictures from what scikit-learn and matplotlib install (no
  download): scikit-learn's ``load_sample_images`` (a temple and a flower, the left and right
  half of each), matplotlib's sample data (Grace Hopper's portrait, a gift-pack product shot,
  the matplotlib logo, an MRI slice, two elevation maps drawn with colour maps);
- :func:`swap_labels`: pairs of photos of different classes that exchange labels;
- :func:`scene_image`: a generated photo with a layout (smooth background, a few large shapes),
  unlike :func:`petsml.testing.fakedata.class_image`'s fine stripes, which no perceptual hash
  can fingerprint.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageOps

EDITS = ("resize", "crop", "mirror", "jpeg")
RESIZE = 0.8
CROP = 0.05  # off each side: a 10 % crop
JPEG_QUALITY = 60
KEPT_QUALITY = 95  # a copy without the "jpeg" edit is still a JPEG file


def edited_copy(source: Image.Image, edits: tuple[str, ...], target: Path) -> Path:
    """Save ``source`` with ``edits`` (names of :data:`EDITS`) applied, as JPEG at ``target``."""
    unknown = set(edits) - set(EDITS)
    if unknown:
        raise ValueError(f"unknown edit(s) {sorted(unknown)}; use {EDITS}")
    image = source.convert("RGB")
    if "resize" in edits:
        size = (round(image.width * RESIZE), round(image.height * RESIZE))
        image = image.resize(size, Image.Resampling.LANCZOS)
    if "crop" in edits:
        dx, dy = round(image.width * CROP), round(image.height * CROP)
        image = image.crop((dx, dy, image.width - dx, image.height - dy))
    if "mirror" in edits:
        image = ImageOps.mirror(image)
    quality = JPEG_QUALITY if "jpeg" in edits else KEPT_QUALITY
    image.save(target, format="JPEG", quality=quality)
    return target


def _drawn(values: np.ndarray, cmap: str) -> Image.Image:
    from matplotlib import colormaps

    scaled = (values - values.min()) / max(float(np.ptp(values)), 1e-9)
    return Image.fromarray((colormaps[cmap](scaled)[..., :3] * 255).astype(np.uint8))


def non_pet_images() -> list[tuple[str, Image.Image]]:
    """Ten named RGB pictures that show no animal (see the module docstring)."""
    import matplotlib
    from sklearn.datasets import load_sample_images

    out = []
    for array, name in zip(load_sample_images().images, ("temple", "flower"), strict=True):
        half = array.shape[1] // 2
        out.append((f"{name}-left", Image.fromarray(array[:, :half])))
        out.append((f"{name}-right", Image.fromarray(array[:, half:])))
    data = Path(matplotlib.get_data_path()) / "sample_data"
    files = {
        "grace-hopper": "grace_hopper.jpg",
        "gift-pack": "Minduka_Present_Blue_Pack.png",
        "logo": "logo2.png",
    }
    for name, file in files.items():
        with Image.open(data / file) as image:
            out.append((name, image.convert("RGB")))
    mri = np.frombuffer(gzip.open(data / "s1045.ima.gz").read(), np.uint16).reshape(256, 256)
    out.append(("mri", Image.fromarray((mri / mri.max() * 255).astype(np.uint8)).convert("RGB")))
    out.append(("topobathy", _drawn(np.load(data / "topobathy.npz")["topo"], "terrain")))
    dem = np.load(data / "jacksboro_fault_dem.npz")["elevation"].astype(np.float64)
    out.append(("fault-dem", _drawn(dem, "gray")))
    return out


def swap_labels(labels: np.ndarray, share: float, rng: np.random.Generator) -> dict[int, int]:
    """Row -> its new (wrong) label for ``share`` of the rows (rounded up to an even count),
    in pairs of rows of different classes that exchange labels."""
    labels = np.asarray(labels)
    n = int(round(share * len(labels)))
    n += n % 2
    pool = [int(i) for i in rng.permutation(len(labels))]
    swapped: dict[int, int] = {}
    while len(swapped) < n and len(pool) >= 2:
        first = pool.pop(0)
        partner = next((p for p in pool if labels[p] != labels[first]), None)
        if partner is None:
            break
        pool.remove(partner)
        swapped[first], swapped[partner] = int(labels[partner]), int(labels[first])
    return swapped


def scene_image(seed: int, size: tuple[int, int] = (160, 120)) -> Image.Image:
    """A generated photo with a layout: a smooth two-colour gradient and four to seven large
    ellipses and boxes in random colours, lightly noisy; each seed another scene."""
    rng = np.random.default_rng([seed, 7])
    width, height = size
    top, bottom = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    mix = np.linspace(0, 1, height)[:, None, None]
    background = (top * (1 - mix) + bottom * mix) * np.ones((1, width, 1))
    image = Image.fromarray(background.astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(4, 8))):
        x0, y0 = rng.uniform(-0.2, 0.8) * width, rng.uniform(-0.2, 0.8) * height
        w, h = rng.uniform(0.2, 0.6) * width, rng.uniform(0.2, 0.6) * height
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape((x0, y0, x0 + w, y0 + h), fill=colour)
    pixels = np.asarray(image, dtype=np.float64) + rng.normal(0, 6, (height, width, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
