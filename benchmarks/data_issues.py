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
N_COPIES = 10  # test photos copied into train per seed


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
    """One seed's faults. ``copies``: run -> copy id -> its original test photo, for the runs
    "mixed" (copy i gets edit i mod 4: one edit each), "all" (all four at once) and each edit."""

    rows: pd.DataFrame  # the copies and non-pets (label = the true one; random for a non-pet)
    swapped: dict[str, int]  # image_id -> the wrong label given
    copies: dict[str, dict[str, str]]
    non_pets: list[str]


def plant(frame: pd.DataFrame, work: Path, seed: int, pets: list[tuple[str, Path]]) -> Planted:
    rng = np.random.default_rng(seed)
    test_ids = sorted(frame.loc[frame["split"] == "test", "image_id"])
    originals = [str(i) for i in rng.choice(test_ids, N_COPIES, replace=False)]
    by_id = frame.set_index("image_id")
    rows, copies = [], {}
    for run in ("all", *EDITS):
        copies[run] = {}
        for original in originals:
            copy_id = f"s{seed}-copy-{run}-{original}"
            edits = EDITS if run == "all" else (run,)
            with Image.open(by_id.loc[original, "path"]) as image:
                target = edited_copy(image, edits, work / f"{copy_id}.jpg")
            copies[run][copy_id] = original
            rows.append(_row(copy_id, by_id.loc[original, "label"], target))
    copies["mixed"] = {
        copy: original
        for i, original in enumerate(originals)
        for copy, source in copies[EDITS[i % len(EDITS)]].items()
        if source == original
    }
    for image_id, path in pets:
        rows.append(_row(image_id, int(rng.integers(len(BREEDS))), path))
    train = frame[frame["split"] == "train"].reset_index(drop=True)
    wrong = swap_labels(train["label"].to_numpy(), SWAP_SHARE, rng)
    swapped = {str(train["image_id"].iloc[i]): label for i, label in wrong.items()}
    return Planted(pd.concat(rows, ignore_index=True), swapped, copies, [i for i, _ in pets])


def faulted_frame(frame: pd.DataFrame, planted: Planted, run: str) -> pd.DataFrame:
    """The sample with the swapped labels, ``run``'s copies and the non-pets."""
    ids = set(planted.copies[run]) | set(planted.non_pets)
    extra = planted.rows[planted.rows["image_id"].isin(ids)].drop_duplicates("image_id")
    out = pd.concat([frame, extra], ignore_index=True)
    given = zip(out["image_id"], out["label"], strict=True)
    out["label"] = [planted.swapped.get(image_id, label) for image_id, label in given]
    return out


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


def _share(hits: int, total: int) -> float | None:
    return hits / total if total else None


def score(found: Findings, planted: Planted, copies: dict[str, str]) -> dict[str, tuple]:
    """Kind -> (recall, precision, hits, planted, flagged) against the planted faults."""
    report = found.report
    flagged = {i["image_id"] for i in report["label_issues"]["issues"]}
    judged = flagged - set(planted.non_pets) - set(copies)  # a non-pet has no right breed
    swapped = len(flagged & set(planted.swapped))
    pairs = {frozenset((p["a"]["image_id"], p["b"]["image_id"]))
             for p in report["near_duplicates"]["pairs"]}  # fmt: skip
    planted_pairs = {frozenset(pair) for pair in copies.items()}
    copied = len(pairs & planted_pairs)
    outliers = {p["image_id"] for p in report["outliers"]["photos"]}
    strays = len(outliers & set(planted.non_pets))
    return {
        "label errors": (_share(swapped, len(planted.swapped)), _share(swapped, len(judged)),
                         swapped, len(planted.swapped), len(judged)),
        "near-duplicates": (_share(copied, len(planted_pairs)), _share(copied, len(pairs)),
                            copied, len(planted_pairs), len(pairs)),
        "outliers": (_share(strays, len(planted.non_pets)), _share(strays, len(outliers)),
                     strays, len(planted.non_pets), len(outliers)),
    }  # fmt: skip


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


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
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--work", type=Path, default=None, help="where the made photos go")
    parser.add_argument("--verbose", action="store_true", help="list every faulted run's finding")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="override a params.yaml value (dotted key), as `dvc exp run -S` does",
    )  # fmt: skip
    args = parser.parse_args()
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    overrides = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.set)}
    params = parse_params(apply_overrides(raw, overrides))
    print(header(CPU))
    print(f"date {date.today().isoformat()}, backbone {params.model.backbone}, seeds {args.seeds}"
          + (f", overrides {overrides}" if overrides else ""))  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        frame = sample_frame(params)
        pets = []
        for name, image in non_pet_images():
            image.save(work / f"nonpet-{name}.jpg", format="JPEG", quality=90)
            pets.append((f"nonpet-{name}", work / f"nonpet-{name}.jpg"))
        planted = {seed: plant(frame, work, seed, pets) for seed in args.seeds}
        every = pd.concat([frame, *(p.rows for p in planted.values())], ignore_index=True)
        cache = Cache(every.drop_duplicates("image_id").reset_index(drop=True), params)
        print(f"decoded and featurized {len(cache.short)} photos once: {cache.seconds:.0f} s")
        clean, clean_s = cache.run(frame, params)
        print(f"\nthe clean sample ({len(frame)} photos; data_issues {clean_s:.1f} s):")
        print("\n".join(describe(clean)))
        kinds = ("label errors", "near-duplicates", "outliers")
        print("\n| seed | run | " + " | ".join(f"{k} recall | {k} precision" for k in kinds)
              + " | seconds |")  # fmt: skip
        print("|" + " --- |" * (3 + 2 * len(kinds)))
        per_edit: dict[str, list[tuple]] = {edit: [] for edit in EDITS}
        for seed, faults in planted.items():
            for run in ("mixed", "all"):
                found, seconds = cache.run(faulted_frame(frame, faults, run), params)
                scores = score(found, faults, faults.copies[run])
                cells = " | ".join(f"{_cell(r)} ({h}/{n}) | {_cell(p)} ({h}/{f})"
                                   for r, p, h, n, f in scores.values())  # fmt: skip
                print(f"| {seed} | {run} | {cells} | {seconds:.1f} |")
                if args.verbose:
                    print("\n".join(describe(found)))
            for edit in EDITS:
                found, _ = cache.run(faulted_frame(frame, faults, edit), params)
                per_edit[edit].append(score(found, faults, faults.copies[edit])["near-duplicates"])
        print("\nnear-duplicates one edit at a time (every seed together):")
        for edit, rows in per_edit.items():
            hits, total, found = (sum(r[i] for r in rows) for i in (2, 3, 4))
            print(f"  {edit}: recall {_cell(_share(hits, total))} ({hits}/{total}), "
                  f"precision {_cell(_share(hits, found))} ({hits}/{found})")  # fmt: skip


if __name__ == "__main__":
    main()
