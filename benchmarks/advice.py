"""Is the advice right? Every case with its expected cell stated first, over seeded splits.

For each case the photos pass the frozen backbone once (the featurize stage's
``petsml.training.features.extract_features``, fused, float32); then, for every seeded split,
the advise stage's own function (``petsml.advice.advise.advise``) gives the cell and strategy,
and the two frozen strategies are fitted exactly as ``train@feature_extractor`` and
``train@svm_early`` fit them (their heads, their C grids from params.yaml, svm_early at the block
``model.early_block: auto`` resolves to). The regret is the validation points lost by following
the advice instead of taking the strategy that won on validation.

Cases (expected similarity, stated before running):

- pets: the real photos in ``../shared/pets-sample`` (37 breeds), all of them and 5 and 2 per
  breed: **similar** (ImageNet holds ~120 dog breeds and several cats);
- pets rendered as greyscale edge maps (Pillow ``FIND_EDGES`` inverted, and ``CONTOUR``):
  **unlike** (never similar; uncertain accepted);
- scikit-learn's bundled 8x8 handwritten digits, upscaled: **unlike**.

scikit-image and torchvision bundle no labelled image sets that load offline (skimage's
``data`` module holds single test images; torchvision's datasets download), so none is used.

    python -m benchmarks.advice [--splits 3] [--case NAME ...] [--backbone efficientnet_lite1]

Prints the machine, one row per case (expected and advised cells, how often each verdict came
out, the strategy that won on validation, mean regret and its worst split) and per-split detail.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageFilter, ImageOps

from benchmarks.machine import header
from petsml.advice.advise import advise
from petsml.config import Params, load_params, parse_params
from petsml.data.decode import DecodedImages, decode_images
from petsml.data.feature_file import SplitFeatures
from petsml.models.backbones import create_backbone, imagenet_head
from petsml.models.heads import fit_linear_svm, fit_logistic
from petsml.training.features import extract_features

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT.parent / "shared" / "pets-sample"
CPU = torch.device("cpu")
DIGIT_SIDE = 64


@dataclass(frozen=True)
class Case:
    name: str
    expected: str  # the similarity cell stated before running
    photos: Callable[[Path], pd.DataFrame]  # writes the photos, returns image_id, file, label


def _pets(per_class: int | None) -> Callable[[Path], pd.DataFrame]:
    def photos(folder: Path) -> pd.DataFrame:
        rows = [
            (p.stem, str(p), p.stem.rsplit("_", 1)[0])
            for p in sorted((SAMPLE / "images").glob("*.jpg"))
        ]
        frame = pd.DataFrame(rows, columns=["image_id", "file", "label"])
        if per_class is not None:
            frame = frame.groupby("label", group_keys=False).head(per_class)
        return frame.reset_index(drop=True)

    return photos


def _edges(kind: str) -> Callable[[Path], pd.DataFrame]:
    def photos(folder: Path) -> pd.DataFrame:
        frame = _pets(None)(folder)
        out = []
        for row in frame.itertuples():
            with Image.open(row.file) as img:
                grey = img.convert("L")
            if kind == "find_edges":
                drawn = ImageOps.invert(grey.filter(ImageFilter.FIND_EDGES))
            else:
                drawn = grey.filter(ImageFilter.CONTOUR)
            target = folder / f"{row.image_id}.png"
            drawn.convert("RGB").save(target)
            out.append((row.image_id, str(target), row.label))
        return pd.DataFrame(out, columns=["image_id", "file", "label"])

    return photos


def _digits(folder: Path) -> pd.DataFrame:
    from sklearn.datasets import load_digits

    digits = load_digits()
    out = []
    for row, (pixels, label) in enumerate(zip(digits.images, digits.target, strict=True)):
        image = Image.fromarray(255 - (pixels * (255 / 16)).clip(0, 255).astype(np.uint8), "L")
        target = folder / f"digit_{row:04d}.png"
        image.resize((DIGIT_SIDE, DIGIT_SIDE), Image.Resampling.NEAREST).convert("RGB").save(target)
        out.append((f"digit_{row:04d}", str(target), str(label)))
    return pd.DataFrame(out, columns=["image_id", "file", "label"])


CASES = {
    case.name: case
    for case in (
        Case("pets", "similar", _pets(None)),
        Case("pets-5", "similar", _pets(5)),
        Case("pets-2", "similar", _pets(2)),
        Case("pets-edges", "unlike", _edges("find_edges")),
        Case("pets-contour", "unlike", _edges("contour")),
        Case("digits", "unlike", _digits),
    )
}


def features_of(frame: pd.DataFrame, work: Path, backbone_name: str) -> SplitFeatures:
    """Every photo through the fused frozen backbone once, as the featurize stage runs it."""
    decoded = work / "decoded"
    decode_images(
        frame.assign(file=frame["file"].map(lambda f: Path(f).name)),
        Path(frame["file"].iloc[0]).parent,
        decoded,
        256,
        2,
    )
    backbone = create_backbone(backbone_name, early_block=-1).fuse_()
    return extract_features(
        backbone,
        DecodedImages.open(decoded),
        frame["image_id"].tolist(),
        4,
        CPU,
        precision="fp32",
        imagenet_head=imagenet_head(backbone),
    )


def split(labels: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Per class: 30 % test, then 25 % of the rest validation (at least one each), seeded."""
    rng = np.random.default_rng(seed)
    parts: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for label in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == label))
        n_test = max(1, round(0.3 * rows.size)) if rows.size > 2 else 0
        rest = rows[n_test:]
        n_val = max(1, round(0.25 * rest.size))
        parts["test"] += rows[:n_test].tolist()
        parts["val"] += rest[:n_val].tolist()
        parts["train"] += rest[n_val:].tolist()
    return {k: np.array(sorted(v), dtype=np.int64) for k, v in parts.items()}


def subset(features: SplitFeatures, rows: np.ndarray) -> SplitFeatures:
    return SplitFeatures(
        image_id=features.image_id[rows],
        penultimate=features.penultimate[rows],
        blocks=[b[rows] for b in features.blocks],
        imagenet={k: v[rows] for k, v in features.imagenet.items()},
        backbone=features.backbone,
        input_size=features.input_size,
    )


def run_split(params: Params, features: SplitFeatures, labels: np.ndarray, seed: int) -> dict:
    rows = split(labels, seed)
    frames = {
        name: pd.DataFrame({"image_id": features.image_id[r], "label": labels[r]})
        for name, r in rows.items()
    }
    tf, vf = subset(features, rows["train"]), subset(features, rows["val"])
    advice = advise(params, frames["train"], frames["val"], tf, vf)
    y_tr, y_va = labels[rows["train"]], labels[rows["val"]]
    block = advice["early_block"]
    fe = fit_logistic(tf.penultimate, y_tr, vf.penultimate, y_va, params.feature_extractor.C)
    svm = fit_linear_svm(tf.block(block), y_tr, vf.block(block), y_va, params.svm_early.C)
    val = {"feature_extractor": fe.val_accuracy, "svm_early": svm.val_accuracy}
    test_rows = rows["test"]
    test = {}
    if test_rows.size:
        te = subset(features, test_rows)
        test = {
            "feature_extractor": float(np.mean(fe.predict(te.penultimate) == labels[test_rows])),
            "svm_early": float(np.mean(svm.predict(te.block(block)) == labels[test_rows])),
        }
    best = max(val.values())
    return {
        "seed": seed,
        "cell": advice["cell"],
        "verdict": advice["similarity"]["verdict"],
        "advised": advice["strategy"],
        "block": block,
        "p_value": advice["similarity"]["p_value"],
        "imagenet": advice["similarity"]["imagenet"].get("mean_max_softmax"),
        "val": val,
        "test": test,
        "winners": [s for s, v in val.items() if v == best],
        "regret": 100 * (best - val[advice["strategy"]]),
        "train_per_class": advice["size"]["train_per_class_median"],
        "val_photos": int(len(y_va)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--splits", type=int, default=3, help="seeded splits per case")
    parser.add_argument("--case", choices=sorted(CASES), action="append", help="default: all")
    parser.add_argument("--backbone", default=None, help="default: params.yaml's model.backbone")
    args = parser.parse_args()
    raw = load_params(ROOT / "params.yaml").model_dump(by_alias=True)
    if args.backbone:
        raw["model"]["backbone"] = args.backbone
    params = parse_params(json.loads(json.dumps(raw)))
    print(header(CPU), flush=True)
    print(
        f"backbone {params.model.backbone}, fp32 frozen features; advise.alpha "
        f"{params.advise.alpha}, advise.imagenet_confidence "
        f"{params.advise.imagenet_confidence}; {args.splits} seeded splits per case",
        flush=True,
    )
    results, photos = {}, {}
    for name in args.case or list(CASES):
        case = CASES[name]
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            (work / "photos").mkdir()
            frame = case.photos(work / "photos")
            features = features_of(frame, work, params.model.backbone)
        labels = pd.factorize(frame["label"], sort=True)[0]
        results[name] = [run_split(params, features, labels, seed) for seed in range(args.splits)]
        photos[name] = len(frame)
        for r in results[name]:
            print(
                f"  {name} seed {r['seed']}: {r['cell']} -> {r['advised']} (block {r['block']},"
                f" adjusted p {r['p_value']:.3g}, ImageNet top-1 prob {r['imagenet']:.3f}); "
                f"val {json.dumps({k: round(v, 3) for k, v in r['val'].items()})}, "
                f"test {json.dumps({k: round(v, 3) for k, v in r['test'].items()})}, "
                f"regret {r['regret']:.1f} pts",
                flush=True,
            )
    print()
    head = (
        "case",
        "photos",
        "train/class",
        "val photos",
        "expected",
        "verdicts",
        "advised",
        "won on val",
        "regret (mean, worst)",
        "verdict ok",
    )
    print("| " + " | ".join(head) + " |")
    print("|" + " --- |" * len(head))
    for name, rows in results.items():
        verdicts = Counter(r["verdict"] for r in rows)
        expected = CASES[name].expected
        ok = (
            all(r["verdict"] == "similar" for r in rows)
            if expected == "similar"
            else not any(r["verdict"] == "similar" for r in rows)
        )
        won = Counter(w for r in rows for w in r["winners"])
        regrets = [r["regret"] for r in rows]
        cells = (
            name,
            photos[name],
            f"{statistics.median(r['train_per_class'] for r in rows):g}",
            f"{rows[0]['val_photos']}",
            expected,
            ", ".join(f"{v} {n}/{len(rows)}" for v, n in verdicts.most_common()),
            ", ".join(
                f"{s} {n}/{len(rows)}" for s, n in Counter(r["advised"] for r in rows).items()
            ),
            ", ".join(f"{s} {n}/{len(rows)}" for s, n in won.most_common()),
            f"{statistics.mean(regrets):.1f}, {max(regrets):.1f}",
            "yes" if ok else "NO",
        )
        print("| " + " | ".join(map(str, cells)) + " |")


if __name__ == "__main__":
    main()
