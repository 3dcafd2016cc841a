"""Does the data_issues stage find faults planted in real photos? And in the clean ones?

On the 372 real Oxford-IIIT Pet photos of ``../shared/pets-sample`` (test: the sample's
``test.txt``; validation: the split stage's own seeded per-breed slice of the rest), seeded
faults are planted (:mod:`petsml.testing.faults`):

- **label errors**: 5 % of the original train photos get another breed's label, in pairs of
  photos of different breeds that swap labels;
- **near-duplicates**: 10 test photos copied into train with their true label, each copy
  resized to 0.8x, cropped by 10 % (5 % off every side), mirrored and saved at JPEG quality 60,
  all four at once; then, one edit at a time, the same 10 photos (a run per edit);
- **non-pets**: 10 pictures made from images scikit-learn and matplotlib ship (no download; see
  :func:`petsml.testing.faults.non_pet_images`), in train, each with a random breed label.

Every photo passes the default backbone once (the featurize stage's
``petsml.training.features.extract_features``, fused, float32); the stage's own function,
:func:`petsml.data_issues.find.find_issues`, then runs with the shipped ``params.yaml``
settings (``--set key=value`` overrides one, to see how much a result hangs on it), on the clean
sample and on the faulted one. Precision and recall per kind:

- label errors: flagged swapped photos / swapped photos (recall), / flagged photos that are
  neither a non-pet nor an injected copy (precision: a non-pet has no right breed, so flagging
  it is not counted against the rule);
- near-duplicates: injected (copy, original) pairs confirmed / 10, / confirmed pairs;
- outliers: non-pets flagged / 10, / flagged photos.

    python -m benchmarks.data_issues [--seed 0] [--set data_issues.duplicate_cosine=0.7]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml
from PIL import Image

from benchmarks.machine import header
from petsml.config import Params, parse_params
from petsml.data.breeds import BREEDS, CLASS_ID, breed_of
from petsml.data.decode import DecodedImages, load_rgb
from petsml.data.split import stratified_val
from petsml.data_issues.find import Findings, Photos, find_issues
from petsml.models.backbones import create_backbone, imagenet_head
from petsml.testing.faults import EDITS, edited_copy, non_pet_images, swap_labels
from petsml.testing.project import apply_overrides
from petsml.training.features import extract_features

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT.parent / "shared" / "pets-sample"
CPU = torch.device("cpu")
SWAP_SHARE = 0.05
N_COPIES = 10  # the copies in the main run have all four EDITS


# --------------------------------------------------------------------------- the photos


def sample_frame(params: Params) -> pd.DataFrame:
    """image_id, split, label, file, path of every sample photo; validation drawn as the
    split stage draws it."""
    test = {
        line.split()[0]
        for line in (SAMPLE / "annotations" / "test.txt").read_text().splitlines()
        if line.strip()
    }
    rows = []
    for path in sorted((SAMPLE / "images").glob("*.jpg")):
        split = "test" if path.stem in test else "trainval"
        label = CLASS_ID[breed_of(path.stem)]
        rows.append((path.stem, split, label, f"images/{path.name}", str(path)))
    frame = pd.DataFrame(rows, columns=["image_id", "split", "label", "file", "path"])
    trainval = frame[frame["split"] == "trainval"].assign(
        breed=lambda f: f["image_id"].map(breed_of)
    )
    is_val = stratified_val(trainval, params.split.val_fraction, params.split.seed)
    frame.loc[is_val.index, "split"] = np.where(is_val, "val", "train")
    return frame


def _row(image_id: str, label: int, path: Path) -> pd.DataFrame:
    return pd.DataFrame(
        [{"image_id": image_id, "split": "train", "label": int(label), "file": path.name,
          "path": str(path)}]
    )  # fmt: skip


@dataclass
class Planted:
    frame: pd.DataFrame  # every photo: the sample, the copies, the non-pets (label = true label)
    swapped: dict[str, int]  # image_id -> the wrong label given
    copies: dict[str, dict[str, str]]  # run ("all" or an edit) -> copy id -> original test id
    non_pets: list[str]


def plant(frame: pd.DataFrame, work: Path, seed: int) -> Planted:
    rng = np.random.default_rng(seed)
    test_ids = sorted(frame.loc[frame["split"] == "test", "image_id"])
    originals = rng.choice(test_ids, N_COPIES, replace=False)
    by_id = frame.set_index("image_id")
    rows, copies = [frame], {}
    for run in ("all", *EDITS):
        copies[run] = {}
        for original in originals:
            copy_id = f"copy-{run}-{original}"
            with Image.open(by_id.loc[original, "path"]) as image:
                target = edited_copy(image, EDITS if run == "all" else (run,),
                                     work / f"{copy_id}.jpg")  # fmt: skip
            copies[run][copy_id] = str(original)
            rows.append(_row(copy_id, by_id.loc[original, "label"], target))
    pets = []
    for name, image in non_pet_images():
        target = work / f"nonpet-{name}.jpg"
        image.save(target, format="JPEG", quality=90)
        pets.append(target.stem)
        rows.append(_row(target.stem, int(rng.integers(len(BREEDS))), target))
    train = frame[frame["split"] == "train"].reset_index(drop=True)
    wrong = swap_labels(train["label"].to_numpy(), SWAP_SHARE, rng)
    swapped = {str(train["image_id"].iloc[i]): label for i, label in wrong.items()}
    return Planted(pd.concat(rows, ignore_index=True), swapped, copies, pets)


# --------------------------------------------------------------------------- one run


class Cache:
    """Decoded pixels and frozen features of every photo, computed once."""

    def __init__(self, frame: pd.DataFrame, params: Params):
        started = time.perf_counter()
        size = params.decode.size
        array = np.stack([load_rgb(p, size) for p in frame["path"]])
        self.images = DecodedImages(array, {i: k for k, i in enumerate(frame["image_id"])})
        backbone = create_backbone(params.model.backbone, early_block=-1).fuse_()
        self.features = extract_features(
            backbone, self.images, frame["image_id"].tolist(), 4, CPU, desc="benchmark",
            precision="fp32", imagenet_head=imagenet_head(backbone),
        )  # fmt: skip
        self.short = {}
        for image_id, path in zip(frame["image_id"], frame["path"], strict=True):
            with Image.open(path) as image:
                self.short[image_id] = min(image.size)
        self.seconds = time.perf_counter() - started
        self.backbone = backbone.name

    def run(self, frame: pd.DataFrame, params: Params) -> tuple[Findings, float]:
        ids = frame["image_id"].tolist()
        rows = self.images.indices(ids)
        head = self.features.imagenet
        photos = Photos(
            frame=frame.assign(short_side=[self.short[i] for i in ids]).reset_index(drop=True),
            penultimate=self.features.penultimate[rows],
            imagenet_top1=head["top1"][rows] if "top1" in head else None,
            imagenet_animal=head["animal"][rows] if "animal" in head else None,
            pixels=lambda part: self.images.take(ids[part]),
        )
        started = time.perf_counter()
        found = find_issues(photos, list(BREEDS), params.data_issues, self.images.size)
        return found, time.perf_counter() - started


# --------------------------------------------------------------------------- scoring


def _ratio(hits: int, total: int) -> str:
    return f"{hits / total:.2f} ({hits}/{total})" if total else "-"


def score(found: Findings, planted: Planted, copies: dict[str, str]) -> dict[str, str]:
    report = found.report
    flagged = {i["image_id"] for i in report["label_issues"]["issues"]}
    judged = flagged - set(planted.non_pets) - set(copies)
    hits = len(flagged & set(planted.swapped))
    pairs = {frozenset((p["a"]["image_id"], p["b"]["image_id"]))
             for p in report["near_duplicates"]["pairs"]}  # fmt: skip
    planted_pairs = {frozenset(pair) for pair in copies.items()}
    outliers = {p["image_id"] for p in report["outliers"]["photos"]}
    return {
        "label errors": f"recall {_ratio(hits, len(planted.swapped))}, precision "
        f"{_ratio(hits, len(judged))}; non-pets also flagged: "
        f"{len(flagged & set(planted.non_pets))}/{len(planted.non_pets)}",
        "near-duplicates": f"recall {_ratio(len(pairs & planted_pairs), len(planted_pairs))}, "
        f"precision {_ratio(len(pairs & planted_pairs), len(pairs))}",
        "outliers": f"recall {_ratio(len(outliers & set(planted.non_pets)), len(planted.non_pets))}"
        f", precision {_ratio(len(outliers & set(planted.non_pets)), len(outliers))}",
    }


def describe(found: Findings) -> list[str]:
    """What a run reports, photo by photo (for the clean sample: real findings)."""
    report = found.report
    lines = [f"counts: {report['counts']}"]
    for p in report["near_duplicates"]["pairs"]:
        lines.append(f"  near-duplicate: {p['a']['split']} {p['a']['image_id']} ~ "
                     f"{p['b']['split']} {p['b']['image_id']} (cosine {p['cosine']:.3f}, "
                     f"{p['hash_bits']} bits{', mirrored' if p['mirrored'] else ''})")  # fmt: skip
    for i in report["label_issues"]["issues"]:
        lines.append(f"  label issue #{i['rank']}: {i['split']} {i['image_id']} given "
                     f"{i['given_name']}, suggested {i['suggested_name']} (self-confidence "
                     f"{i['self_confidence']:.3f})")  # fmt: skip
    for p in report["outliers"]["photos"]:
        extra = (f", ImageNet top-1 {p['imagenet_top1']}, animal {p['imagenet_animal']:.2f}"
                 if "imagenet_top1" in p else "")  # fmt: skip
        lines.append(f"  outlier: {p['split']} {p['image_id']} {'+'.join(p['reasons'])} "
                     f"(density z {p['density_z']:.1f}{extra})")  # fmt: skip
    for p in report["quality"]["photos"]:
        measured = f"blur {p['blur']:.2f}, brightness {p['brightness']:.2f}, {p['short_side']} px"
        lines.append(
            f"  quality: {p['split']} {p['image_id']} {'+'.join(p['issues'])} ({measured})"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=None, help="where the made photos go")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="override a params.yaml value (dotted key), as `dvc exp run -S` does",
    )  # fmt: skip
    args = parser.parse_args()
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    overrides = dict(item.split("=", 1) for item in args.set)
    params = parse_params(
        apply_overrides(raw, {k: yaml.safe_load(v) for k, v in overrides.items()})
    )
    if overrides:
        print(f"overrides: {overrides}")
    print(header(CPU))
    print(f"date {date.today().isoformat()}, backbone {params.model.backbone}, seed {args.seed}")
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        frame = sample_frame(params)
        planted = plant(frame, work, args.seed)
        cache = Cache(planted.frame, params)
        print(f"decoded and featurized {len(planted.frame)} photos once: {cache.seconds:.0f} s")
        clean, clean_s = cache.run(frame, params)
        print(f"\nclean sample ({len(frame)} photos, {clean_s:.1f} s):")
        print("\n".join(describe(clean)))
        everything = planted.frame
        faulted_ids = set(frame["image_id"]) | set(planted.copies["all"]) | set(planted.non_pets)
        faulted = everything[everything["image_id"].isin(faulted_ids)].copy()
        given = zip(faulted["image_id"], faulted["label"], strict=True)
        faulted["label"] = [planted.swapped.get(i, label) for i, label in given]
        found, seconds = cache.run(faulted, params)
        print(f"\nfaulted sample ({len(faulted)} photos, {len(planted.swapped)} swapped labels, "
              f"{N_COPIES} copies with every edit, {len(planted.non_pets)} non-pets; "
              f"{seconds:.1f} s: {found.seconds}):")  # fmt: skip
        for kind, line in score(found, planted, planted.copies["all"]).items():
            print(f"  {kind}: {line}")
        print("\n".join(describe(found)))
        print("\nnear-duplicates, one edit at a time (the clean sample plus 10 copies):")
        for edit in EDITS:
            ids = set(frame["image_id"]) | set(planted.copies[edit])
            one, _ = cache.run(everything[everything["image_id"].isin(ids)], params)
            line = score(one, planted, planted.copies[edit])["near-duplicates"]
            print(f"  {edit}: {line}")


if __name__ == "__main__":
    main()
