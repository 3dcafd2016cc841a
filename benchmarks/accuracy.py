"""Accuracy on real photos: what raises test accuracy, over repeated seeded splits.

With ~10 photos per breed (``../shared/pets-sample``) one split moves accuracy by +-5 points, so
every configuration is scored on ``--seeds`` seeded stratified splits (per breed: a
``--test-fraction`` test slice, the rest train, of which ``--val-fraction`` is validation) and
reported as mean +- std (and min-max) of test accuracy. Everything that is picked (the probes'
``C``, LP-FT's learning rate and epochs, the best configuration) is picked on validation; test
is only scored.

Each backbone's features are extracted once for every photo and its horizontal mirror, with the
project's code (``petsml.data.decode`` -> ``petsml.training.features.extract_features``, in
``model.precision``), then every split's probes run on those arrays:

- linear probe (``petsml.models.heads.fit_logistic``: ``feature_extractor.C`` picked on val);
- + flip TTA (test probabilities averaged over the photo and its mirror);
- + flip train (the mirrors' features as extra training rows), and both;
- several backbones: concatenated features, and probability-averaged probes;
- LP-FT (``finetune_top`` with ``head_init: probe``, ``petsml.training.finetune``) on the
  backbone whose probe scored best on validation, lr and epochs from a small grid picked on
  validation (``--finetune-seeds`` splits: it costs minutes per split on a 2-core CPU).

A backbone entry is ``name`` or ``name@<decode size>``: the photos are decoded (short side
resized, centre-cropped) to that size and the model crops its own input size from the middle.
Without ``@`` the decode size keeps the default's crop ratio (224 of 256 = 0.875): Lite0 256,
Lite1 275, Lite2 298. ``efficientnet_lite1@256`` is what shipping Lite1 with today's
``decode.size: 256`` would see. The first two (three) entries form the "+" ensembles.

Accuracy figures do not depend on machine load; the seconds and images/s do (the header and the
closing line print the load average).

    python -m benchmarks.accuracy [FOLDER] [--seeds 5] [--backbones efficientnet_lite0 ...]
        [--skip-finetune]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from benchmarks.accuracy_finetune import accuracy, run_finetune
from benchmarks.machine import header, load_average, precision_name
from benchmarks.photos import photo_frame
from petsml.config import load_params
from petsml.data.crop import decode_size_for  # noqa: E402
from petsml.data.decode import DecodedImages, decode_images
from petsml.data.split import stratified_test, stratified_val
from petsml.data.tensors import to_input
from petsml.models.backbones import create_backbone
from petsml.models.heads import HeadFit, fit_logistic
from petsml.models.precision import autocast, use_bf16
from petsml.training.features import extract_features

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")
DEFAULT_BACKBONES = [
    "efficientnet_lite0",
    "efficientnet_lite1",
    "efficientnet_lite2",
    "efficientnet_lite1@256",
]


@dataclass
class FeatureSet:
    """One backbone at one decode size: penultimate features of every photo and its mirror."""

    key: str  # name@decode
    name: str
    decode_size: int
    decoded_dir: Path
    plain: np.ndarray
    mirror: np.ndarray
    images_per_s: float  # wall clock: depends on the machine's load
    cpu_ms: float  # CPU milliseconds per image, all threads: less sensitive to load


@dataclass
class Scores:
    """Per-seed validation and test accuracy of one configuration."""

    val: list[float] = field(default_factory=list)
    test: list[float] = field(default_factory=list)
    note: str = ""

    def add(self, val: float, test: float) -> None:
        self.val.append(float(val))
        self.test.append(float(test))


def short(key: str) -> str:
    """``efficientnet_lite1@275`` -> ``lite1@275``: table labels that fit a line."""
    return key.replace("efficientnet_lite", "lite")


def parse_entry(entry: str) -> tuple[str, int | None]:
    name, _, size = entry.partition("@")
    return name, int(size) if size else None


def seeded_split(frame: pd.DataFrame, seed: int, test_fraction: float, val_fraction: float):
    """Row positions (train, val, test): the project's stratified draws, seeded."""
    is_test = stratified_test(frame, test_fraction, seed).to_numpy()
    trainval = frame[~is_test]
    is_val = stratified_val(trainval, val_fraction, seed).reindex(frame.index, fill_value=False)
    is_val = is_val.to_numpy()
    train = np.flatnonzero(~is_test & ~is_val)
    return train, np.flatnonzero(is_val), np.flatnonzero(is_test)


def extract(
    entries: list[str], frame: pd.DataFrame, folder: Path, tmp: Path, args, precision: str
) -> tuple[list[FeatureSet], dict[int, float], dict[str, torch.nn.Module]]:
    """Decode each needed size once and extract every entry's features (photo and mirror)."""
    ids = frame.image_id.tolist()
    backbones: dict[str, torch.nn.Module] = {}
    decoded: dict[int, DecodedImages] = {}
    decode_seconds: dict[int, float] = {}
    out = []
    for entry in entries:
        name, size = parse_entry(entry)
        if name not in backbones:
            backbones[name] = create_backbone(
                name, not args.random_init, image_size=args.image_size
            )
        backbone = backbones[name]
        input_size = int(backbone.preprocessing.input_size)
        size = size or decode_size_for(input_size)
        if size < input_size:
            print(f"skipping {entry}: its input is {input_size}px, larger than the decode {size}px")
            continue
        folder_out = tmp / f"decoded_{size}"
        if size not in decoded:
            started = time.perf_counter()
            decode_images(frame[["image_id", "file"]], folder, folder_out, size, args.workers)
            decode_seconds[size] = time.perf_counter() - started
            decoded[size] = DecodedImages.open(folder_out)
        images = decoded[size]
        mirrored = DecodedImages(np.ascontiguousarray(images.array[:, :, ::-1]), images.rows)
        plain = extract_features(
            backbone, images, ids, args.batch_size, CPU, entry, precision
        ).penultimate
        # the mirror pass is the timed one: the same work as the first, after its warm-up
        started, cpu_started = time.perf_counter(), time.process_time()
        mirror = extract_features(
            backbone, mirrored, ids, args.batch_size, CPU, entry + " mirror", precision
        ).penultimate
        seconds = time.perf_counter() - started
        cpu_ms = (time.process_time() - cpu_started) / len(ids) * 1000
        key = f"{name}@{size}"
        out.append(
            FeatureSet(key, name, size, folder_out, plain, mirror, len(ids) / seconds, cpu_ms)
        )
        print(
            f"  features {short(key):<24} {plain.shape[1]:>5}-d  {len(ids) / seconds:6.1f} "
            f"images/s, {cpu_ms:.0f} CPU ms/image (input {input_size}px from {size}px)",
            flush=True,
        )
    return out, decode_seconds, backbones


@torch.inference_mode()
def interleaved_cost(
    sets: list[FeatureSet], backbones: dict, rounds: int, batch: int, bf16: bool
) -> dict[str, float]:
    """images/s of each entry's frozen forward (``extract_features``' step) on the same photos.

    The backbones take turns, round after round (the first round warms up), and the median
    round counts: a shared machine's load changes then hit every backbone alike, which
    separate passes minutes apart do not get.
    """
    inputs = {}
    for fs in sets:
        prep = backbones[fs.name].preprocessing
        u8 = torch.from_numpy(DecodedImages.open(fs.decoded_dir).array[:batch].copy())
        inputs[fs.key] = to_input(u8, prep.mean, prep.std, size=int(prep.input_size))
        backbones[fs.name].eval().to(memory_format=torch.channels_last)
    times: dict[str, list[float]] = {fs.key: [] for fs in sets}
    for round_ in range(rounds + 1):
        for fs in sets:
            started = time.perf_counter()
            with autocast(CPU, bf16):
                backbones[fs.name].forward_both(inputs[fs.key])
            if round_:
                times[fs.key].append(time.perf_counter() - started)
    return {key: len(inputs[key]) / float(np.median(t)) for key, t in times.items()}


def probe_variants(
    fs: FeatureSet, y: np.ndarray, split, Cs: list[float]
) -> dict[str, tuple[float, float, np.ndarray, np.ndarray]]:
    """(val acc, test acc, val proba, test proba) of the probe and its flip variants."""
    tr, va, te = split
    P, M = fs.plain, fs.mirror
    out = {}
    for flip_train in (False, True):
        X = np.vstack([P[tr], M[tr]]) if flip_train else P[tr]
        yt = np.concatenate([y[tr], y[tr]]) if flip_train else y[tr]
        fit: HeadFit = fit_logistic(X, yt, P[va], y[va], Cs)
        pv, pt = fit.predict_proba(P[va]), fit.predict_proba(P[te])
        tv = (pv + fit.predict_proba(M[va])) / 2
        tt = (pt + fit.predict_proba(M[te])) / 2
        base = "+ flip train" if flip_train else ""
        out[base] = (accuracy(pv, y[va]), accuracy(pt, y[te]), pv, pt)
        out[(base + " + flip TTA").strip()] = (accuracy(tv, y[va]), accuracy(tt, y[te]), tv, tt)
    return out


def concat_set(sets: list[FeatureSet]) -> FeatureSet:
    key = "+".join(s.key for s in sets)
    return FeatureSet(
        key, key, 0, Path(), np.hstack([s.plain for s in sets]),
        np.hstack([s.mirror for s in sets]), 0.0, 0.0,
    )  # fmt: skip


def fmt_row(label: str, s: Scores, reference: Scores) -> str:
    """One table row; the difference to ``reference`` is paired: split by split (the LP-FT rows
    ran on the first splits only), so the splits' common ups and downs cancel."""
    t = np.array(s.test)
    d = t - np.array(reference.test[: len(t)])
    spread = f"{t.std():.3f}" if len(t) > 1 else "  -  "
    d_spread = f"{d.std():.3f}" if len(t) > 1 else "  -  "
    return (
        f"  {short(label):<44} {np.mean(s.val):7.3f}  {t.mean():.3f} ± {spread}  "
        f"{t.min():.3f}–{t.max():.3f}  {d.mean():+.3f} ± {d_spread}  {len(t):>5}"
        f"{'  ' + s.note if s.note else ''}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", nargs="?", default=str(ROOT.parent / "shared" / "pets-sample"))
    parser.add_argument("--seeds", type=int, default=5, help="seeded splits (0..N-1)")
    parser.add_argument("--backbones", nargs="+", default=DEFAULT_BACKBONES, metavar="NAME[@SIZE]")
    parser.add_argument("--test-fraction", type=float, default=0.3)
    parser.add_argument("--val-fraction", type=float, default=0.25, help="of the train photos")
    parser.add_argument("--skip-finetune", action="store_true")
    parser.add_argument("--finetune-seeds", type=int, default=2, help="LP-FT runs on these splits")
    parser.add_argument("--finetune-lrs", type=float, nargs="+", default=[3e-4, 1e-3, 3e-3])
    parser.add_argument("--finetune-epochs", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--finetune-batch-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64, help="feature extraction")
    parser.add_argument("--workers", type=int, default=0, help="decode processes (0: per core)")
    parser.add_argument("--image-size", type=int, help="override every backbone's input size")
    parser.add_argument("--random-init", action="store_true", help="no pretrained weights")
    parser.add_argument("--cost-rounds", type=int, default=3, help="interleaved forward timing")
    parser.add_argument("--cost-batch", type=int, default=32, help="photos per timed forward")
    parser.add_argument("--cost-only", action="store_true", help="stop after the forward cost")
    args = parser.parse_args()
    started_all = time.perf_counter()
    torch.manual_seed(0)
    params = load_params(ROOT / "params.yaml")
    base_raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    Cs = list(params.feature_extractor.C)
    folder = Path(args.folder)
    frame = photo_frame(folder)
    y = frame.class_id.to_numpy()
    bf16 = use_bf16(CPU, params.model.precision)
    seeds = list(range(args.seeds))
    splits = [seeded_split(frame, s, args.test_fraction, args.val_fraction) for s in seeds]
    tr, va, te = splits[0]
    print(header())
    print(
        f"{len(frame)} photos, {frame.breed.nunique()} breeds from {folder}; {len(seeds)} seeded "
        f"splits, per split {len(tr)} train / {len(va)} val / {len(te)} test (about "
        f"{len(tr) / frame.breed.nunique():.1f} train photos per breed); features in "
        f"{precision_name(bf16)} (model.precision {params.model.precision}); probe C from "
        f"{Cs} picked on val",
        flush=True,
    )
    rows: dict[str, Scores] = {}
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        t0 = time.perf_counter()
        sets, decode_seconds, backbones = extract(
            args.backbones, frame, folder, tmp, args, params.model.precision
        )
        seconds["decode"] = sum(decode_seconds.values())
        seconds["features"] = time.perf_counter() - t0 - seconds["decode"]
        if not sets:
            raise SystemExit("no backbone entry fits its decode size")
        t0 = time.perf_counter()
        cost = interleaved_cost(sets, backbones, args.cost_rounds, args.cost_batch, bf16)
        first = cost[sets[0].key]
        print(
            f"frozen forward, interleaved ({args.cost_rounds} rounds of {args.cost_batch} photos, "
            f"median) [{precision_name(bf16)} channels_last]: "
            + ", ".join(f"{short(k)} {v:.1f} images/s ({v / first:.2f}x)" for k, v in cost.items()),
            flush=True,
        )
        seconds["forward cost"] = time.perf_counter() - t0
        if args.cost_only:
            return

        t0 = time.perf_counter()
        probas: dict[tuple[str, str, int], tuple[np.ndarray, np.ndarray]] = {}
        for fs in sets:
            for seed, split in zip(seeds, splits, strict=True):
                for variant, (v, t, pv, pt) in probe_variants(fs, y, split, Cs).items():
                    rows.setdefault(f"probe {fs.key} {variant}".strip(), Scores()).add(v, t)
                    probas[(fs.key, variant, seed)] = (pv, pt)
        seconds["probes"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        groups = [sets[:n] for n in (2, 3) if len(sets) >= n]
        for group in groups:
            joined = concat_set(group)
            for seed, split in zip(seeds, splits, strict=True):
                _, va, te = split
                found = probe_variants(joined, y, split, Cs)
                for variant in ("", "+ flip train + flip TTA"):
                    v, t, _, _ = found[variant]
                    rows.setdefault(f"concat {joined.key} {variant}".strip(), Scores()).add(v, t)
                    pv = np.mean([probas[(s.key, variant, seed)][0] for s in group], axis=0)
                    pt = np.mean([probas[(s.key, variant, seed)][1] for s in group], axis=0)
                    label = f"prob-avg {joined.key} {variant}".strip()
                    rows.setdefault(label, Scores()).add(accuracy(pv, y[va]), accuracy(pt, y[te]))
        seconds["ensembles"] = time.perf_counter() - t0

        # the single backbone for LP-FT: best plain probe on validation (mean over the splits)
        single = {fs.key: np.mean(rows[f"probe {fs.key}"].val) for fs in sets}
        chosen = max(sets, key=lambda fs: single[fs.key])
        if not args.skip_finetune:
            t0 = time.perf_counter()
            n = min(args.finetune_seeds, len(seeds))
            print(
                f"LP-FT finetune_top on {short(chosen.key)} (best probe on val), {n} splits, "
                f"grid lr {args.finetune_lrs} x epochs {args.finetune_epochs}",
                flush=True,
            )
            ft, ft_tta, probe_same = Scores(), Scores(), Scores()
            for seed, split in zip(seeds[:n], splits[:n], strict=True):
                val, test, test_tta, picked = run_finetune(
                    chosen, frame, y, split, args, tmp / f"ft{seed}", base_raw
                )
                print(f"  split {seed}: picked {picked}: val {val:.3f}, test {test:.3f}")
                ft.add(val, test)
                ft_tta.add(val, test_tta)
                probe = rows[f"probe {chosen.key}"]
                probe_same.add(probe.val[seed], probe.test[seed])
            ft.note = ft_tta.note = probe_same.note = f"{n} of {len(seeds)} splits"
            rows[f"probe {chosen.key} (same splits as LP-FT)"] = probe_same
            rows[f"LP-FT finetune_top {chosen.key}"] = ft
            rows[f"LP-FT finetune_top {chosen.key} + flip TTA"] = ft_tta
            seconds["finetune"] = time.perf_counter() - t0

    print()
    reference = f"probe {sets[0].key}"
    print(
        f"  {'configuration':<44} {'val acc':>7}  {'test acc mean ± std':<19}  "
        f"{'min–max':<11}  {'Δ test, paired':<14}  {'seeds':>5}"
    )
    for label, scores in rows.items():
        print(fmt_row(label, scores, rows[reference]))
    print(f"(Δ test: minus {short(reference)}'s test accuracy on the same split, mean ± std)")
    full = {k: v for k, v in rows.items() if len(v.test) == len(seeds)}
    best = max(full, key=lambda k: (np.mean(full[k].val), -len(k)))
    b = full[best]
    print(
        f"best on validation (mean over {len(seeds)} splits): {short(best)}: "
        f"val {np.mean(b.val):.3f}, test {np.mean(b.test):.3f} ± {np.std(b.test):.3f}"
    )
    print(
        "extraction images/s ["
        + precision_name(bf16)
        + " channels_last]: "
        + ", ".join(
            f"{short(fs.key)} {fs.images_per_s:.1f} ({fs.cpu_ms:.0f} CPU ms/image)" for fs in sets
        )
    )
    print(
        "seconds: "
        + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items())
        + f", total {time.perf_counter() - started_all:.0f}; load average now {load_average()}"
    )


if __name__ == "__main__":
    main()
