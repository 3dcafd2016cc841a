"""Test-time augmentation modes (``train.tta``): mode -> the views whose logits a shipped model's
eval-mode forward averages (:mod:`petsml.models.classifier` holds what each view does)."""

from __future__ import annotations

TTA: dict[str, tuple[str, ...]] = {
    "none": ("identity",),
    "flip": ("identity", "hflip"),
}
