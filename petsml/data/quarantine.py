"""The quarantine: which manifest rows later stages must not use, and why (plain pandas).

``data/quarantine.csv`` (image_id, file, reason, detail) is written by the validate stage
(:mod:`petsml.data.validation`); the split stage leaves its files out. Reasons, in
:data:`REASONS`: a listed image that does not decode (``undecodable``), a stray file that is no
image (``not_an_image``), a listed entry without a file (``missing``), a photo below
``validate.min_width`` x ``min_height`` (``too_small``), one over ``serve.max_pixels``
(``too_large``: the served model refuses such images, so no model trains on them either; one
limit, one home in params.yaml) and, in an image folder, a photo in a sub-folder of a class
folder (``nested_folder``: ``pug/nested/shiba_inu_1.jpg`` may not be a pug, and its label would
be a guess; moving it into its class folder is the fix the detail names).
"""

from __future__ import annotations

import pandas as pd

from petsml.sections import ValidateParams

QUARANTINE_COLUMNS = ["image_id", "file", "reason", "detail"]
REASONS = ("undecodable", "not_an_image", "missing", "too_small", "too_large", "nested_folder")
LIMIT_KEY = "serve.max_pixels"  # the one pixel limit: training photos and served images


def too_small(manifest: pd.DataFrame, params: ValidateParams) -> pd.Series:
    """Listed, decodable photos narrower or lower than ``validate.min_width/min_height``."""
    decoded = manifest["listed"].astype(bool) & manifest["decodable"].astype(bool)
    small = (manifest["width"] < params.min_width) | (manifest["height"] < params.min_height)
    return decoded & small


def too_large(manifest: pd.DataFrame, max_pixels: int | None) -> pd.Series:
    """Listed, decodable photos with more pixels than ``max_pixels`` (``serve.max_pixels``)."""
    decoded = manifest["listed"].astype(bool) & manifest["decodable"].astype(bool)
    if max_pixels is None:
        return decoded & False
    pixels = manifest["width"].astype("int64") * manifest["height"].astype("int64")
    return decoded & (pixels > max_pixels)


def nested(manifest: pd.DataFrame) -> pd.Series:
    """Listed photos deeper than ``<class>/<photo>`` (an image folder's sub-folders; the
    official ``images/<id>.jpg`` never are)."""
    depth = manifest["file"].astype(str).str.count("/")
    return manifest["listed"].astype(bool) & (depth > 1)


def quarantine_reasons(
    manifest: pd.DataFrame, params: ValidateParams, max_pixels: int | None = None
) -> tuple[pd.Series, pd.Series]:
    """(reason, detail) per manifest row; reason "" for a row later stages may use."""
    listed = manifest["listed"].astype(bool)
    exists = manifest["exists"].astype(bool)
    decodable = manifest["decodable"].astype(bool)
    small, large, deep = (
        too_small(manifest, params),
        too_large(manifest, max_pixels),
        nested(manifest),
    )
    reason = pd.Series("", index=manifest.index, dtype=object)
    reason[listed & ~exists] = "missing"
    reason[listed & exists & ~decodable] = "undecodable"
    reason[~listed & ~decodable] = "not_an_image"
    reason[small] = "too_small"
    reason[large] = "too_large"
    reason[deep & (reason == "")] = "nested_folder"
    detail = manifest["error"].astype(str).copy()
    size = manifest["width"].astype(str) + "x" + manifest["height"].astype(str)
    minimum = f"validate.min_width x min_height = {params.min_width}x{params.min_height}"
    detail[small] = size[small] + f" px, below {minimum} in params.yaml"
    pixels = manifest["width"].astype("int64") * manifest["height"].astype("int64")
    detail[large] = (
        size[large] + " = " + pixels[large].astype(str) + f" pixels, over {LIMIT_KEY} = "
        f"{max_pixels} in params.yaml (the limit the served model refuses above too)"
    )
    folder = manifest["file"].astype(str).str.rsplit("/", n=1).str[0]
    top = manifest["file"].astype(str).str.split("/", n=1).str[0]
    is_deep = reason == "nested_folder"
    detail[is_deep] = (
        "in sub-folder " + folder[is_deep] + "/ of class folder " + top[is_deep] + "/: a "
        "photo's class is its folder, directly under data.folder; move it into the folder of "
        "the class it shows"
    )
    return reason, detail


def quarantine_table(
    manifest: pd.DataFrame, params: ValidateParams, max_pixels: int | None = None
) -> pd.DataFrame:
    """Rows later stages must not use, each with a reason in :data:`REASONS` and a detail."""
    reason, detail = quarantine_reasons(manifest, params, max_pixels)
    rows = manifest.loc[reason != "", ["image_id", "file"]].copy()
    rows["reason"] = reason[reason != ""]
    rows["detail"] = detail[reason != ""]
    return rows[QUARANTINE_COLUMNS].reset_index(drop=True)
