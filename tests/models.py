"""A tiny model and test images: what the serving, registry and track tests log and predict with.

The model is timm's tiny test network, random init (no download), saved with the model.pt
contract; ``check_row`` states what every answered prediction row must look like.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from petsml.data.breeds import BREEDS, SPECIES
from petsml.testing.fakedata import class_image

BACKBONE = "test_efficientnet"  # timm's tiny test network, random init (no download)
INPUT_SIZE = 32
DECODE_SIZE = 40


def make_tiny_model(
    path: Path, strategy: str = "feature_extractor", task: str = "breed", seed: int = 0
) -> Path:
    """Save a tiny random-init Classifier with the model.pt contract; returns ``path``."""
    from petsml.models.backbones import create_backbone
    from petsml.models.classifier import Classifier, save_classifier

    class_names = list(BREEDS if task == "breed" else SPECIES)
    torch.manual_seed(seed)
    backbone = create_backbone(BACKBONE, pretrained=False, early_block=-3, image_size=INPUT_SIZE)
    model = Classifier(backbone, len(class_names), feature="penultimate")
    with torch.no_grad():  # spread the logits so top-k orderings are not ties
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "strategy": strategy,
        "task": task,
        "class_names": class_names,
        "decode_size": DECODE_SIZE,
        "backbone": BACKBONE,
    }
    save_classifier(model.eval(), path, meta)
    return path


def write_jpeg(path: Path, class_index: int = 3, seed: int = 0, size=(70, 52)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    class_image(class_index, np.random.default_rng(seed), size).save(path, format="JPEG")
    return path


def bomb_png(side: int = 13000) -> bytes:
    """A valid single-colour greyscale PNG of side x side pixels (about 170 KB per 13000^2)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)  # 8-bit greyscale
    raw = zlib.compress(bytes(side + 1) * side, 9)  # filter byte 0 + a row of zeros, per row
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


def sample_photo(tmp_path: Path) -> Path:
    """A real photo from the shared sample when there is one, else a generated JPEG."""
    from petsml.testing.project import SHARED_SAMPLE

    photos = sorted((SHARED_SAMPLE / "images").glob("*.jpg")) if SHARED_SAMPLE.is_dir() else []
    if not photos:
        print("no shared pets sample: predicting a generated JPEG instead")
        return write_jpeg(tmp_path / "pet.jpg")
    return photos[0]


def check_row(row: dict, class_names) -> None:
    assert row["error"] == ""
    assert row["label"] in class_names
    assert 0.0 <= row["probability"] <= 1.0
    top = json.loads(row["top5"])
    assert len(top) == min(5, len(class_names))
    assert top[0]["label"] == row["label"]
    assert top[0]["probability"] == pytest.approx(row["probability"])
    probs = [t["probability"] for t in top]
    assert probs == sorted(probs, reverse=True)
    assert all(0.0 <= p <= 1.0 for p in probs) and sum(probs) <= 1.0 + 1e-6
    assert len({t["label"] for t in top}) == len(top)
