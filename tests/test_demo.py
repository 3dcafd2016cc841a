"""The demo's shipped photos: every breed, listed as the official archives list them, within the
size budget, with the dataset's attribution and licence."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from petsml.data.breeds import BREEDS

pytestmark = pytest.mark.integration

DEMO = Path(__file__).resolve().parents[1] / "demo" / "pets"
BUDGET_BYTES = 4_000_000


def _ids(name: str) -> list[str]:
    lines = (DEMO / "annotations" / name).read_text().splitlines()
    return [line.split()[0] for line in lines if line.strip() and not line.startswith("#")]


def test_demo_photos_cover_every_breed_are_listed_small_and_attributed():
    photos = sorted((DEMO / "images").glob("*.jpg"))
    ids = {p.stem for p in photos}
    trainval, test = _ids("trainval.txt"), _ids("test.txt")
    assert set(_ids("list.txt")) == ids == set(trainval) | set(test)
    assert not set(trainval) & set(test)
    per_breed = {b: sum(i.rsplit("_", 1)[0] == b for i in ids) for b in BREEDS}
    assert set(per_breed.values()) == {5}, per_breed
    assert {i.rsplit("_", 1)[0] for i in test} == set(BREEDS)  # one test photo per breed
    assert sum(p.stat().st_size for p in photos) < BUDGET_BYTES
    with Image.open(photos[0]) as img:
        assert img.format == "JPEG" and min(img.size) == 256
    attribution = (DEMO / "ATTRIBUTION.md").read_text()
    for needed in ("Parkhi", "Vedaldi", "Zisserman", "Jawahar", "Cats and Dogs", "CVPR",
                   "CC BY-SA 4.0"):  # fmt: skip
        assert needed in attribution
