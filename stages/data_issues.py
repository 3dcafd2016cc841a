"""DVC stage `data_issues`: what is wrong with the data, before anything trains on it.

Reads the featurize stage's cached features (no photo passes the backbone again), the decoded
cache (blur, brightness, the perceptual hash), the manifest (original sizes) and, for the
report's thumbnails only, the raw photos under ``data.folder``. Writes
``reports/data_issues.{json,md,html}``, the counts (``reports/data_issues_counts.json``, a DVC
metric) and ``data/data_issues/`` (``excluded.csv``: the train/val rows advise and train leave
out; ``label_issues.csv``). With ``data_issues.on_leak: fail`` a near-duplicate across splits
stops the pipeline here, after the report is written.
"""

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from petsml import paths
from petsml.config import load_params
from petsml.data.decode import DecodedImages
from petsml.data.feature_file import feature_path, read_features
from petsml.data.manifest import read_manifest
from petsml.data.split import class_names, load_split
from petsml.data_issues.find import DataIssuesError, Photos, find_issues, leak_error
from petsml.data_issues.report import ReportFiles, summary, write_report
from petsml.stage import run_stage

# The params.yaml keys this stage reads. dvc.yaml's params: list is written
# from this (`make deps`), and the suite checks every key the stage reads is here.
PARAMS = (
    "data.task",
    "data.folder",
    "data_issues",
)

log = logging.getLogger("petsml.stages.data_issues")


def photos(task: str, folder: Path) -> Photos:
    """Every split's rows with their cached features, original sizes and decoded pixels."""
    frames, pens, top1, animal = [], [], [], []
    for split in paths.SPLIT_NAMES:
        frame = load_split(paths.split_csv(split), task).assign(split=split)
        features = read_features(paths.FEATURES, split)
        rows = features.rows(frame["image_id"].tolist(), str(feature_path(paths.FEATURES, split)))
        frames.append(frame)
        pens.append(features.penultimate[rows])
        head = features.imagenet  # empty for a backbone without an ImageNet classifier
        top1.append(head["top1"][rows] if "top1" in head else None)
        animal.append(head["animal"][rows] if "animal" in head else None)
    frame = pd.concat(frames, ignore_index=True)
    sizes = read_manifest(paths.MANIFEST).drop_duplicates("file").set_index("file")
    if not frame["file"].isin(sizes.index).all():
        missing = frame.loc[~frame["file"].isin(sizes.index), "file"].iloc[0]
        raise DataIssuesError(f"{paths.MANIFEST} lacks {missing}, which the splits list; re-run "
                              "`dvc repro split`.")  # fmt: skip
    short = np.minimum(sizes["width"], sizes["height"])
    frame["short_side"] = frame["file"].map(short).astype("int64")
    frame["path"] = [str(folder / file) for file in frame["file"]]
    decoded = DecodedImages.open(paths.DECODED)
    ids = frame["image_id"].tolist()
    decoded.indices(ids)  # every photo is in the cache, or the error names the fix
    with_head = all(part is not None for part in top1 + animal)
    return Photos(
        frame=frame,
        penultimate=np.concatenate(pens),
        imagenet_top1=np.concatenate(top1) if with_head else None,
        imagenet_animal=np.concatenate(animal) if with_head else None,
        pixels=lambda part: decoded.take(ids[part]),
    )


def main() -> None:
    started = time.perf_counter()
    params = load_params()
    found = photos(params.data.task, Path(params.data.folder))
    decode_size = DecodedImages.open(paths.DECODED).size
    names = class_names(paths.SPLITS, params.data.task)
    findings = find_issues(found, names, params.data_issues, decode_size)
    files = ReportFiles(
        json=paths.DATA_ISSUES_JSON,
        md=paths.DATA_ISSUES_MD,
        html=paths.DATA_ISSUES_HTML,
        counts=paths.DATA_ISSUES_COUNTS,
        data=paths.DATA_ISSUES,
    )
    by_id = dict(zip(found.frame["image_id"], map(Path, found.frame["path"]), strict=True))
    write_report(findings, files, by_id, params.data_issues.max_shown)
    seconds = time.perf_counter() - started
    parts = ", ".join(f"{k} {v:.1f}" for k, v in findings.seconds.items())
    log.info("data_issues: %.1f s (%s)", seconds, parts)
    print(summary(findings.report))
    error = leak_error(findings, paths.DATA_ISSUES_MD)
    if error is not None:
        raise error


if __name__ == "__main__":
    run_stage("data_issues", main)
