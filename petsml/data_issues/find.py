"""Every detector over every photo, and what follows from them: the report and the exclusions.

:func:`find_issues` is the data_issues stage's work and the benchmark's, on data handed to it
(:class:`Photos`: the splits' rows, their cached features, a reader of their decoded pixels and
the paths of their raw files), so the same code runs under DVC and on injected faults.

Its report (``reports/data_issues.json``) lists each finding with what decided it; its
exclusion list (``data/data_issues/excluded.csv``, read by
:func:`petsml.data.split.load_fit_split`) names the train and validation rows that advise and
train leave out: near-duplicates of a more held-out photo when ``data_issues.on_leak`` is
``drop``, likely label errors when ``data_issues.exclude_label_issues`` is set. Outliers and
poor photos are reported only: an unusual photo of a pet is still a pet.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from petsml.config import DataIssuesParams
from petsml.data.split import EXCLUDED_COLUMNS, FIT_SPLITS
from petsml.data_issues import duplicates, label_errors, outliers, phash, quality, similarity
from petsml.data_issues.scan import scan
from petsml.errors import PetsError
from petsml.models.heads import BLAS_THREADS

log = logging.getLogger(__name__)

REPORT_VERSION = 1
FOLD_WORKERS = 2  # processes fitting the label probe's folds, beside the pixel pass's thread
# ... from this many train+val photos: below it ten fits take a fraction of a second, which
# starting the workers would cost again
FOLD_WORKERS_FROM = 200
PIXEL_THREADS = 2  # the pass over the decoded cache (numpy lets go of the GIL over a batch)
PHOTO_COLUMNS = ("image_id", "split", "label", "file", "path", "short_side")
LABEL_ISSUE_COLUMNS = [
    "rank", "image_id", "split", "file", "given", "given_name", "suggested", "suggested_name",
    "self_confidence", "suggested_probability", "excluded",
]  # fmt: skip


class DataIssuesError(PetsError):
    """The data cannot be checked, or a finding stops the pipeline (``on_leak: fail``)."""


@dataclass
class Photos:
    """Every photo of every split, row-aligned: ``frame`` (:data:`PHOTO_COLUMNS`: ``file`` as
    the split lists it, ``path`` where it can be opened, ``short_side`` of the original in
    pixels), its penultimate features, the ImageNet head's reading (None without one) and
    ``pixels(rows)``: the decoded uint8 photos of a slice of rows."""

    frame: pd.DataFrame
    penultimate: np.ndarray
    imagenet_top1: np.ndarray | None
    imagenet_animal: np.ndarray | None
    pixels: Callable[[slice], np.ndarray]

    def __post_init__(self) -> None:
        missing = [c for c in PHOTO_COLUMNS if c not in self.frame.columns]
        if missing:
            raise DataIssuesError(f"photo table lacks column(s) {', '.join(missing)}")
        if len(self.penultimate) != len(self.frame):
            raise DataIssuesError(
                f"{len(self.penultimate)} feature rows for {len(self.frame)} photos; re-run "
                "`dvc repro featurize`"
            )


@dataclass
class Findings:
    """What :func:`find_issues` found: the report (JSON-ready), the exclusion list
    (:data:`~petsml.data.split.EXCLUDED_COLUMNS`) and the ranked label issues."""

    report: dict[str, Any]
    excluded: pd.DataFrame
    label_issues: pd.DataFrame
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def counts(self) -> dict[str, int]:
        return dict(self.report["counts"])


def _photo(frame: pd.DataFrame, row: int, class_names: list[str]) -> dict[str, Any]:
    record = frame.iloc[row]
    label = int(record["label"])
    return {
        "image_id": str(record["image_id"]),
        "split": str(record["split"]),
        "file": str(record["file"]),
        "label": class_names[label] if 0 <= label < len(class_names) else str(label),
    }


def _near_duplicates(
    photos: Photos,
    settings: DataIssuesParams,
    class_names: list[str],
    candidates: list[tuple[int, int, float]],
    hashes: phash.Hashes,
) -> tuple[dict[str, Any], dict[int, list[int]]]:
    frame = photos.frame
    splits = frame["split"].tolist()
    pairs, unjudged = duplicates.confirm(candidates, hashes, settings.duplicate_hash_bits)
    copies = duplicates.groups(len(frame), pairs)
    to_drop = duplicates.leak_exclusions(copies, splits)
    rows = []
    for pair in pairs:
        a, b = _photo(frame, pair.a, class_names), _photo(frame, pair.b, class_names)
        rows.append({
            "a": a, "b": b, "cosine": pair.cosine, "hash_bits": pair.bits,
            "mirrored": pair.mirrored, "across_splits": a["split"] != b["split"],
            "labels_differ": a["label"] != b["label"],
        })  # fmt: skip
    in_train = {row for group in copies for row in group if splits[row] == "train"}
    test_with_train = sorted(
        str(frame["image_id"].iloc[row])
        for group in copies
        if any(r in in_train for r in group)
        for row in group
        if splits[row] == "test"
    )
    section = {
        "candidates": len(candidates),
        "unjudged": unjudged,  # candidates with a photo whose hash fingerprints nothing
        "pairs": rows,
        "groups": [[str(frame["image_id"].iloc[r]) for r in group] for group in copies],
        "test_with_train_duplicate": test_with_train,
        "on_leak": settings.on_leak,
    }
    return section, to_drop


def _label_issues(
    photos: Photos, settings: DataIssuesParams, class_names: list[str], map_folds=map
) -> tuple[dict[str, Any], pd.DataFrame]:
    frame = photos.frame
    fit_rows = np.flatnonzero(frame["split"].isin(FIT_SPLITS).to_numpy())
    labels = frame["label"].to_numpy()[fit_rows].astype(np.int64)
    n_classes = max(len(class_names), int(labels.max(initial=-1)) + 1)
    probs, folds = label_errors.out_of_fold_probabilities(
        photos.penultimate[fit_rows],
        labels,
        n_classes,
        settings.folds,
        settings.C,
        settings.seed,
        map_folds,
    )
    found = label_errors.confident_learning(labels, probs)
    records = []
    for rank, i in enumerate(found.rows, 1):
        row = int(fit_rows[i])
        suggested = int(found.suggested[i])
        records.append({
            "rank": rank,
            "image_id": str(frame["image_id"].iloc[row]),
            "split": str(frame["split"].iloc[row]),
            "file": str(frame["file"].iloc[row]),
            "given": int(labels[i]),
            "given_name": class_names[labels[i]] if labels[i] < len(class_names) else "",
            "suggested": suggested,
            "suggested_name": class_names[suggested] if suggested < len(class_names) else "",
            "self_confidence": round(float(found.self_confidence[i]), 6),
            "suggested_probability": round(float(probs[i, suggested]), 6),
            "excluded": bool(settings.exclude_label_issues),
        })  # fmt: skip
    table = pd.DataFrame(records, columns=LABEL_ISSUE_COLUMNS)
    accuracy = float(np.mean(probs.argmax(axis=1) == labels)) if len(labels) else None
    section = {
        "method": "confident learning (Northcutt et al. 2021): the confident joint's "
        "off-diagonal count, that many lowest self-confidence photos",
        "photos": int(len(labels)),
        "judged": int(found.judged.sum()),
        "folds": folds,
        "C": settings.C,
        "out_of_fold_accuracy": None if accuracy is None else round(accuracy, 4),
        "estimated": found.estimated,
        "issues": records,
    }
    return section, table


def _outliers(
    photos: Photos, settings: DataIssuesParams, near: similarity.Similarity
) -> dict[str, Any]:
    frame = photos.frame
    dense = outliers.robust_z(near.neighbour_distance, near.k)
    rule = outliers.not_an_animal(photos.imagenet_top1, photos.imagenet_animal)
    low = dense.z >= settings.outlier_z
    flagged = low | (rule.flagged if rule.applies else False)
    listed = []
    for row in np.flatnonzero(flagged):
        reasons = [name for name, hit in (("not_animal", rule.applies and rule.flagged[row]),
                                          ("low_density", low[row])) if hit]  # fmt: skip
        entry = {
            "image_id": str(frame["image_id"].iloc[row]),
            "split": str(frame["split"].iloc[row]),
            "file": str(frame["file"].iloc[row]),
            "reasons": reasons,
            "density_z": round(float(dense.z[row]), 3),
        }
        if photos.imagenet_animal is not None and photos.imagenet_top1 is not None:
            entry["imagenet_animal"] = round(float(photos.imagenet_animal[row]), 4)
            entry["imagenet_top1"] = int(photos.imagenet_top1[row])
        listed.append(entry)
    listed.sort(key=lambda e: (-len(e["reasons"]), -e["density_z"]))
    return {
        "density": {
            "neighbours": dense.neighbours,
            "median_distance": round(dense.median, 6),
            "mad": round(dense.mad, 6),
            "z_from": settings.outlier_z,
        },
        "imagenet_rule": {"applies": rule.applies, "why": rule.why},
        "photos": listed,
    }


def _quality(
    photos: Photos, settings: DataIssuesParams, decode_size: int, measured: quality.Quality
) -> dict[str, Any]:
    frame = photos.frame
    masks = quality.flags(
        measured, settings.blur_above, settings.dark_below, settings.tiny_upscale, decode_size
    )
    listed = []
    for row in np.flatnonzero(np.logical_or.reduce(list(masks.values()))):
        listed.append({
            "image_id": str(frame["image_id"].iloc[row]),
            "split": str(frame["split"].iloc[row]),
            "file": str(frame["file"].iloc[row]),
            "issues": [name for name, mask in masks.items() if mask[row]],
            "blur": round(float(measured.blur[row]), 4),
            "brightness": round(float(measured.brightness[row]), 4),
            "short_side": int(measured.short_side[row]),
        })  # fmt: skip
    return {
        "rules": {
            "blur_above": settings.blur_above,
            "dark_below": settings.dark_below,
            "tiny_below_px": decode_size / settings.tiny_upscale,
        },
        "photos": listed,
    }


def _exclusions(
    frame: pd.DataFrame, to_drop: dict[int, list[int]], labels: pd.DataFrame, settings
) -> pd.DataFrame:
    rows = []
    if settings.on_leak == "drop":
        for row, kept in sorted(to_drop.items()):
            kept_ids = ", ".join(f"{frame['split'].iloc[k]} {frame['image_id'].iloc[k]}"
                                 for k in kept[:3])  # fmt: skip
            rows.append((frame["image_id"].iloc[row], frame["split"].iloc[row], "near_duplicate",
                         f"a copy of {kept_ids}"))  # fmt: skip
    if settings.exclude_label_issues:
        for issue in labels.itertuples():
            rows.append((issue.image_id, issue.split, "label_issue",
                         f"labelled {issue.given_name}, looks like {issue.suggested_name} "
                         f"(self-confidence {issue.self_confidence:.3f})"))  # fmt: skip
    return pd.DataFrame(rows, columns=EXCLUDED_COLUMNS)


def find_issues(
    photos: Photos, class_names: list[str], settings: DataIssuesParams, decode_size: int
) -> Findings:
    """Run every detector (see the module docstring); nothing is written."""
    frame = photos.frame.reset_index(drop=True)
    photos.frame = frame
    bad = sorted(set(frame["split"]) - {"train", "val", "test"})
    if bad:
        raise DataIssuesError(f"unknown split {bad[0]!r} in the photo table")
    seconds: dict[str, float] = {}

    def timed(part: str, run: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        out = run()
        seconds[part] = round(time.perf_counter() - started, 3)
        return out

    def from_pixels() -> tuple[phash.Hashes, dict[str, Any]]:
        short = frame["short_side"].fillna(decode_size).to_numpy()
        measured, hashes = timed(
            "pixels", lambda: scan(photos.pixels, len(frame), short, PIXEL_THREADS)
        )
        return hashes, timed("quality", lambda: _quality(photos, settings, decode_size, measured))

    fitted = int(frame["split"].isin(FIT_SPLITS).sum())
    # The label probe's folds run in worker processes (forked first, while this is the only
    # thread; a thread waits on them) and the pixel pass on a thread beside them, while this
    # thread compares every photo with every other once (outliers and near-duplicate
    # candidates): they share nothing, so the results are those of one after the other. BLAS
    # stays on one thread throughout, so no product's rounding depends on what ran beside it.
    with (
        threadpool_limits(BLAS_THREADS),
        label_errors.fold_workers(FOLD_WORKERS if fitted >= FOLD_WORKERS_FROM else 1) as map_folds,
        ThreadPoolExecutor(2) as beside,
    ):
        found_pixels = beside.submit(from_pixels)
        found_labels = beside.submit(  # waits on the fold workers
            timed, "label_issues", lambda: _label_issues(photos, settings, class_names, map_folds)
        )
        near = timed("similarity", lambda: similarity.one_pass(
            photos.penultimate, settings.neighbours, settings.duplicate_cosine))  # fmt: skip
        outlier_section = timed("outliers", lambda: _outliers(photos, settings, near))
        labels_section, label_table = found_labels.result()
        hashes, quality_section = found_pixels.result()
    dupes, to_drop = timed("near_duplicates", lambda: _near_duplicates(
        photos, settings, class_names, near.candidates, hashes))  # fmt: skip
    excluded = _exclusions(frame, to_drop, label_table, settings)
    kinds = {k: sum(k in p["reasons"] for p in outlier_section["photos"])
             for k in ("not_animal", "low_density")}  # fmt: skip
    issues = {k: sum(k in p["issues"] for p in quality_section["photos"])
              for k in ("blurry", "dark", "tiny")}  # fmt: skip
    counts = {
        "photos": int(len(frame)),
        "near_duplicate_pairs": len(dupes["pairs"]),
        "near_duplicate_pairs_across_splits": sum(p["across_splits"] for p in dupes["pairs"]),
        "test_with_train_duplicate": len(dupes["test_with_train_duplicate"]),
        "label_issues": len(label_table),
        "outliers": len(outlier_section["photos"]),
        **kinds,
        **issues,
        "excluded": int(excluded["image_id"].nunique()),
    }
    report = {
        "version": REPORT_VERSION,
        "photos": {s: int((frame["split"] == s).sum()) for s in ("train", "val", "test")},
        "counts": counts,
        "near_duplicates": dupes,
        "label_issues": labels_section,
        "outliers": outlier_section,
        "quality": quality_section,
        "excluded": excluded.to_dict(orient="records"),
        "settings": settings.model_dump(),
    }
    log.info("data issues: %s (seconds: %s)", counts, seconds)
    return Findings(report, excluded, label_table, seconds)


def leak_error(findings: Findings, report_path: str | Path) -> DataIssuesError | None:
    """With ``on_leak: fail``, the error that stops the pipeline when copies cross splits."""
    dupes = findings.report["near_duplicates"]
    crossing = [p for p in dupes["pairs"] if p["across_splits"]]
    if dupes["on_leak"] != "fail" or not crossing:
        return None
    shown = "; ".join(f"{p['a']['split']} {p['a']['file']} ~ {p['b']['split']} {p['b']['file']}"
                      for p in crossing[:5])  # fmt: skip
    return DataIssuesError(
        f"{len(crossing)} near-duplicate pair(s) cross splits (e.g. {shown}); see "
        f"{report_path}. Remove one copy of each from the photos, or set data_issues.on_leak: "
        "drop in params.yaml to train without the train/val copy."
    )
