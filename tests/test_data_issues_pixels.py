"""The pixel-level data_issues measures on pictures with known properties: the perceptual hash
on edited copies (as the stage computes it, from the decoded cache's square), blur, darkness
and size on fixed scales, and the one batched pass that computes them
(:mod:`petsml.data_issues.scan`) against their definitions. Pure and quick."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter, ImageOps

from petsml.data.decode import load_rgb
from petsml.data_issues import duplicates, quality
from petsml.data_issues.phash import BITS, PHash, hash_grey, hash_image, mirror_distance
from petsml.data_issues.scan import scan
from petsml.testing.fakedata import class_image
from petsml.testing.faults import EDITS, edited_copy, scene_image
from petsml.testing.project import shipped_section

SETTINGS = shipped_section("data_issues")
MAX_BITS = SETTINGS.duplicate_hash_bits
DECODE_SIZE = 128


def _decoded_hash(path: Path) -> PHash:
    """The hash the stage computes: the photo as the decoded cache holds it (short side to
    DECODE_SIZE, centre square), its luminance, its pHash."""
    return hash_grey(quality.luminance(load_rgb(path, DECODE_SIZE)[None]))[0]


# ------------------------------------------------------------------------- the perceptual hash


@pytest.mark.parametrize("edits", [("resize",), ("crop",), ("mirror",), ("jpeg",), EDITS])
def test_an_edited_copy_hashes_close_and_other_scenes_far(tmp_path, edits):
    for seed in range(5):
        original = tmp_path / f"scene{seed}.jpg"
        scene_image(seed).save(original, quality=95)
        with Image.open(original) as image:
            copy = edited_copy(image, edits, tmp_path / f"copy{seed}.jpg")
        bits, mirrored = mirror_distance(_decoded_hash(original), _decoded_hash(copy))
        assert bits <= MAX_BITS, (edits, seed, bits)
        assert mirrored == ("mirror" in edits)
    hashes = [_decoded_hash(tmp_path / f"scene{seed}.jpg") for seed in range(5)]
    apart = [mirror_distance(a, b)[0] for i, a in enumerate(hashes) for b in hashes[i + 1 :]]
    assert min(apart) > MAX_BITS  # different scenes never confirm each other


def test_the_mirror_hash_is_the_hash_of_the_mirror_image():
    scene = scene_image(3, (128, 96))
    plain, flipped = hash_image(scene), hash_image(ImageOps.mirror(scene))
    assert plain.bits.size == BITS
    assert np.count_nonzero(plain.mirrored != flipped.bits) <= 2  # float rounding at the median
    assert mirror_distance(plain, flipped) == (np.count_nonzero(plain.bits != flipped.mirrored),
                                               True)  # fmt: skip


def test_texture_without_layout_fingerprints_nothing():
    stripes = class_image(5, np.random.default_rng(0), (72, 56))  # fine stripes of one hue
    assert not hash_image(stripes).informative
    assert hash_image(scene_image(0)).informative
    rows = {0: hash_image(stripes), 1: hash_image(stripes.filter(ImageFilter.SMOOTH))}
    pairs, unjudged = duplicates.confirm([(0, 1, 0.99)], rows, MAX_BITS)
    assert pairs == [] and unjudged == 1


# ------------------------------------------------------------------------------------ quality


def test_blur_dark_and_tiny_are_judged_on_fixed_scales():
    sharp = np.asarray(scene_image(1, (256, 256)).convert("L"), np.float32) / 255
    blurred = np.asarray(
        scene_image(1, (256, 256)).convert("L").filter(ImageFilter.GaussianBlur(3)), np.float32
    ) / 255  # fmt: skip
    effect = quality.blur_effect(np.stack([sharp, blurred]))
    assert effect[0] < SETTINGS.blur_above < effect[1]
    pixels = np.stack([np.asarray(scene_image(1, (64, 64)))] * 3)
    pixels[1] = pixels[1] // 6  # under a quarter of full scale everywhere
    measured, hashes = scan(lambda part: pixels[part], 3, np.array([300, 300, 40]))
    assert len(hashes) == 3 and hashes[0].bits.tolist() == hashes[2].bits.tolist()
    flags = quality.flags(measured, SETTINGS.blur_above, SETTINGS.dark_below,
                          SETTINGS.tiny_upscale, 256)  # fmt: skip
    assert flags["dark"].tolist() == [False, True, False]
    assert flags["tiny"].tolist() == [False, False, True]


def _blur_by_definition(grey: np.ndarray) -> np.ndarray:
    """Crete-Roffet's blur effect written out: a re-blurred copy, both axes, borders left out."""
    out = []
    for image in grey.astype(np.float64):
        shares = []
        for view in (image, image.T):
            kernel = np.ones(quality.REBLUR) / quality.REBLUR
            blurred = np.apply_along_axis(np.convolve, 0, view, kernel, mode="valid")
            half = quality.REBLUR // 2
            sharp = np.abs(np.diff(view, axis=0))[half : half + len(blurred) - 1]
            reblurred = np.abs(np.diff(blurred, axis=0))
            shares.append(np.minimum(sharp, reblurred).sum() / sharp.sum())
        out.append(max(shares))
    return np.array(out)


def test_the_fast_blur_effect_and_the_batched_scan_match_their_definitions():
    rng = np.random.default_rng(0)
    grey = np.stack([np.asarray(scene_image(i, (48, 40)).convert("L"), np.float32) / 255
                     for i in range(11)])  # fmt: skip
    grey[3] += rng.normal(0, 0.05, grey[3].shape).astype(np.float32)  # noise: a sharp photo
    assert np.allclose(quality.blur_effect(grey), _blur_by_definition(grey), atol=1e-5)
    pixels = np.stack([np.asarray(scene_image(i, (40, 40))) for i in range(70)])
    measured, hashes = scan(lambda part: pixels[part], 70, np.full(70, 300))  # 3 batches
    alone = [hash_grey(quality.luminance(pixels[i : i + 1]))[0] for i in (0, 33, 69)]
    assert [hashes[i].bits.tolist() for i in (0, 33, 69)] == [h.bits.tolist() for h in alone]
    assert np.allclose(measured.blur[[0, 33, 69]],
                       [quality.blur_effect(quality.luminance(pixels[i : i + 1]))[0]
                        for i in (0, 33, 69)])  # fmt: skip
