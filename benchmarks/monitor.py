"""Does the monitor flag shifted traffic, stay quiet on unchanged traffic, and cost < 5 ms?

On the real photos of FOLDER (default ../shared/pets-sample, the official layout), seeded:

1. A champion the project's way: the frozen backbone (``--backbone``, default the project's
   efficientnet_lite1) decodes each photo as the served model does (``load_rgb`` at
   ``--decode-size``, centre crop), ``extract_features`` gives the penultimate embeddings, and
   ``fit_logistic`` the head (C picked on validation from params.yaml's grid). Per breed:
   ``--train`` photos train it, ``--val`` photos are its validation set, which is the
   reference (:func:`petsml.monitoring.build_reference`), and the rest is traffic it never saw.
2. Traffic, in windows of ``--windows`` predictions, ``--trials`` windows each:
   (a) held-out real photos (no drift: every alarm is a false alarm);
   (b) the same photos shifted: greyscale, heavy Gaussian blur (radius 2 % of the long side),
       JPEG quality 5, rotated 90°, edge maps (Pillow FIND_EDGES), each re-encoded as a client
       would send it, facts read from the bytes;
   (c) label shift: the held-out photos of 3 breeds only.
   A window larger than its pool of distinct photos is drawn with replacement (the table says
   so: "drawn"); the monitor counts each distinct photo once (``monitor.deduplicate``), so the
   "photos" column is what was tested. The label-shift pool is small (3 breeds x the held-out
   photos of each), so this run sets ``min_window`` to 10 for every window.
3. The cost of recording: :meth:`Recorder.record` into a SQLite store (WAL, synchronous NORMAL,
   the defaults) for each held-out photo, after a single-photo prediction: p50/p95/p99 ms, with
   and without ``keep_photos``.

Prints the machine (CPU model and flags), the date, and a markdown table: per scenario and
window size, the share of windows flagged (for "no drift", the false-alarm rate), the median
p-values of the input (MMD) and prediction (BBSD) tests, the median mean confidence, and which
detectors fired.

    python -m benchmarks.monitor [FOLDER] [--backbone efficientnet_lite1] [--trials 20]
        [--windows 50 100 200] [--permutations 1000]
"""

from __future__ import annotations

import argparse
import collections
import datetime
import io
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter

from benchmarks.machine import header  # noqa: E402
from petsml.config import load_params  # noqa: E402
from petsml.data.breeds import breed_of  # noqa: E402
from petsml.data.decode import DecodedImages, load_rgb  # noqa: E402
from petsml.models.backbones import create_backbone  # noqa: E402
from petsml.models.classifier import Classifier  # noqa: E402
from petsml.models.heads import fit_logistic  # noqa: E402
from petsml.monitoring import (  # noqa: E402
    ImageFacts,
    ModelRef,
    Recorder,
    build_reference,
    classifier_outputs,
    detect_drift,
    image_facts,
)
from petsml.monitoring.settings import load_settings  # noqa: E402
from petsml.monitoring.window import Sample, Window  # noqa: E402
from petsml.training.features import extract_features  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")
MODEL = ModelRef("oxford-pets-breed", "1", "champion")


def _jpeg(img: Image.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def _blur(img: Image.Image) -> bytes:
    return _jpeg(img.filter(ImageFilter.GaussianBlur(radius=0.02 * max(img.size))))


SHIFTS = {
    "greyscale": lambda img: _jpeg(img.convert("L")),
    "blur (heavy)": _blur,
    "JPEG quality 5": lambda img: _jpeg(img, quality=5),
    "rotated 90°": lambda img: _jpeg(img.transpose(Image.Transpose.ROTATE_90)),
    "edge map": lambda img: _jpeg(img.filter(ImageFilter.FIND_EDGES)),
}


@dataclass
class Photos:
    """Photos as a client sends them: bytes, their facts and the served model's decoding."""

    keys: list[str]  # distinct per photo (and per shift): the dedup key
    data: list[bytes]
    facts: list[ImageFacts]
    decoded: np.ndarray  # (N, S, S, 3) uint8
    breeds: list[str]

    def __len__(self) -> int:
        return len(self.keys)


def photos_of(keys: list[str], data: list[bytes], breeds: list[str], size: int) -> Photos:
    decoded = np.stack([load_rgb(io.BytesIO(d), size) for d in data])
    facts = [image_facts(d, x) for d, x in zip(data, decoded, strict=True)]
    return Photos(keys, data, facts, decoded, breeds)


def split(files: list[Path], train: int, val: int, seed: int) -> dict[str, list[Path]]:
    """Per breed, seeded: ``train`` train photos, ``val`` validation, the rest traffic."""
    rng = np.random.default_rng(seed)
    by_breed = collections.defaultdict(list)
    for path in files:
        by_breed[breed_of(path.stem)].append(path)
    parts: dict[str, list[Path]] = {"train": [], "val": [], "traffic": []}
    for breed in sorted(by_breed):
        group = sorted(by_breed[breed])
        order = rng.permutation(len(group))
        parts["train"] += [group[i] for i in order[:train]]
        parts["val"] += [group[i] for i in order[train : train + val]]
        parts["traffic"] += [group[i] for i in order[train + val :]]
    return parts


def embed(backbone, photos: Photos, batch: int) -> np.ndarray:
    images = DecodedImages(photos.decoded, {k: i for i, k in enumerate(photos.keys)})
    return extract_features(backbone, images, photos.keys, batch, CPU, "embed", "fp32").penultimate


def window(photos: Photos, probs, emb, rows: np.ndarray, class_names) -> Window:
    """The window a store would hand the monitor for these rows (keys as content hashes)."""
    facts = [photos.facts[i] for i in rows]
    sample = Sample(
        tuple(class_names), probs[rows], emb[rows], np.array([f.width for f in facts]),
        np.array([f.height for f in facts]), np.array([f.format for f in facts]),
        np.array([f.greyscale for f in facts]),
    )  # fmt: skip
    keys = np.array([photos.keys[i] for i in rows])
    return Window(sample, keys, np.arange(len(rows), dtype=float), keys, MODEL.name, MODEL.version)


def _median(values: list[float]) -> float:
    return float(np.median(values)) if values else float("nan")


def percentiles(values: list[float]) -> str:
    p50, p95, p99 = np.percentile(np.array(values) * 1000, [50, 95, 99])
    return f"p50 {p50:.2f} ms, p95 {p95:.2f} ms, p99 {p99:.2f} ms"


def record_latency(class_names, photos: Photos, probs, emb, keep: bool, calls: int) -> str:
    """ms per :meth:`Recorder.record` of real payloads (the photo's bytes, its decoded array,
    the champion's softmax and embedding), ``calls`` times over the photos."""
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings("params.yaml").replace(
            store=str(Path(tmp) / "predictions.sqlite"), keep_photos=keep
        )
        recorder = Recorder.open(settings, MODEL, class_names, source="benchmark")
        assert recorder is not None
        seconds = []
        for call in range(calls):
            i = call % len(photos.data)
            started = time.perf_counter()
            found = recorder.record(probs[i], photos.data[i], emb[i], photos.decoded[i])
            seconds.append(time.perf_counter() - started)
            assert found is not None
        size = (Path(tmp) / "predictions.sqlite").stat().st_size
        size += (Path(tmp) / "predictions.sqlite-wal").stat().st_size
        recorder.close()
    return (f"record: {percentiles(seconds)} (keep_photos {keep}; {calls} records, store "
            f"{size / 1024:.0f} KiB)")  # fmt: skip


def predict_latency(classifier, photos: Photos, decode: int, n: int) -> str:
    """ms of one single-photo prediction (decode + forward) for scale."""
    seconds = []
    for data in photos.data[:n]:
        started = time.perf_counter()
        classifier_outputs(classifier, load_rgb(io.BytesIO(data), decode)[None])
        seconds.append(time.perf_counter() - started)
    return f"prediction alone (decode + forward, one photo): {percentiles(seconds)} over {n}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", nargs="?", default=str(ROOT.parent / "shared" / "pets-sample"))
    parser.add_argument("--backbone", default="efficientnet_lite1")
    parser.add_argument("--decode-size", type=int, default=256)  # params.yaml decode.size
    parser.add_argument("--train", type=int, default=3, help="train photos per breed")
    parser.add_argument("--val", type=int, default=2, help="validation (= reference) per breed")
    parser.add_argument("--shifted", type=int, default=3, help="held-out photos shifted, per breed")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--windows", type=int, nargs="+", default=[50, 100, 200])
    parser.add_argument("--permutations", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--record-calls", type=int, default=1000)
    parser.add_argument("--random-init", action="store_true", help="no weights (a smoke test)")
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    started = time.perf_counter()
    torch.manual_seed(args.seed)
    print(header(CPU))
    print(f"date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; photos: {args.folder}")
    files = sorted(Path(args.folder, "images").glob("*.jpg"))
    if not files:
        raise SystemExit(f"{args.folder}/images holds no .jpg photos (the official layout)")
    parts = split(files, args.train, args.val, args.seed)
    load = {name: photos_of([p.stem for p in paths], [p.read_bytes() for p in paths],
                            [breed_of(p.stem) for p in paths], args.decode_size)
            for name, paths in parts.items()}  # fmt: skip
    per_breed = collections.Counter(load["traffic"].breeds)
    seen: collections.Counter[str] = collections.Counter()
    chosen = []  # the first --shifted held-out photos of each breed
    for i, breed in enumerate(load["traffic"].breeds):
        seen[breed] += 1
        if seen[breed] <= args.shifted:
            chosen.append(i)
    shifted: dict[str, Photos] = {}
    for name, shift in SHIFTS.items():
        data, keys, breeds = [], [], []
        for i in chosen:
            with Image.open(io.BytesIO(load["traffic"].data[i])) as img:
                data.append(shift(img.convert("RGB")))
            keys.append(f"{name}/{load['traffic'].keys[i]}")
            breeds.append(load["traffic"].breeds[i])
        shifted[name] = photos_of(keys, data, breeds, args.decode_size)
    print(f"photos: {len(load['train'])} train, {len(load['val'])} validation (reference), "
          f"{len(load['traffic'])} held out ({min(per_breed.values())}-{max(per_breed.values())} "
          f"per breed), {len(chosen)} of them shifted 5 ways; "
          f"{time.perf_counter() - started:.0f} s so far", flush=True)  # fmt: skip

    backbone = create_backbone(
        args.backbone, pretrained=not args.random_init, image_size=args.image_size
    )
    backbone.fuse_()
    emb = {name: embed(backbone, photos, args.batch_size)
           for name, photos in {**load, **shifted}.items()}  # fmt: skip
    class_names = sorted(set(load["train"].breeds))
    y = {
        name: np.array([class_names.index(b) for b in load[name].breeds])
        for name in ("train", "val")
    }
    cs = load_params(ROOT / "params.yaml").feature_extractor.C
    head = fit_logistic(emb["train"], y["train"], emb["val"], y["val"], cs)
    classifier = Classifier.from_linear(backbone, head.W, head.b).eval()
    probs = {name: head.predict_proba(vectors).astype(np.float32) for name, vectors in emb.items()}
    traffic_y = np.array([class_names.index(b) for b in load["traffic"].breeds])
    accuracy = float((probs["traffic"].argmax(1) == traffic_y).mean())
    print(f"champion: {args.backbone} + logistic head (C={head.C:g}), held-out accuracy "
          f"{accuracy:.3f}; embeddings of {sum(len(v) for v in emb.values())} photos; "
          f"{time.perf_counter() - started:.0f} s so far", flush=True)  # fmt: skip

    reference = build_reference(probs["val"], emb["val"], load["val"].facts, class_names, MODEL)
    settings = load_settings("params.yaml").replace(
        permutations=args.permutations, min_window=10, seed=args.seed
    )
    rng = np.random.default_rng(args.seed + 1)
    breeds = rng.choice(class_names, 3, replace=False)
    label_rows = np.flatnonzero(np.isin(load["traffic"].breeds, breeds))
    scenarios = {"no drift (held-out photos)": ("traffic", np.arange(len(load["traffic"].keys)))}
    scenarios.update({f"shift: {name}": (name, np.arange(len(chosen))) for name in SHIFTS})
    scenarios[f"label shift: 3 breeds ({', '.join(breeds)})"] = ("traffic", label_rows)
    print()
    print(
        "| traffic | window | drawn | photos | flagged | MMD p (median) | BBSD p (median) "
        "| confidence | detectors that fired |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    check_seconds = []
    for title, (source, pool) in scenarios.items():
        photos = load.get(source) or shifted[source]
        for size in args.windows:
            replace_draw = size > len(pool)
            flagged, mmd_p, bbsd_p, conf, unique = 0, [], [], [], []
            fired: collections.Counter[str] = collections.Counter()
            for _ in range(args.trials):
                rows = rng.choice(pool, size, replace=replace_draw)
                w = window(photos, probs[source], emb[source], rows, class_names)
                tick = time.perf_counter()
                result = detect_drift(reference, w, settings)
                check_seconds.append(time.perf_counter() - tick)
                flagged += result.verdict == "drift"
                fired.update(result.drifted)
                unique.append(result.n_unique)
                if result.verdict == "too few":  # under min_window distinct photos: no tests
                    fired["too few photos"] += 1
                    continue
                mmd_p.append(result.detector("input").p_value)
                bbsd_p.append(result.detector("prediction").p_value)
                conf.append(result.detector("confidence").details["window_mean"])
            fired_text = ", ".join(f"{k} {v}/{args.trials}" for k, v in fired.most_common()) or "–"
            print(f"| {title} | {size} | {'with' if replace_draw else 'without'} replacement "
                  f"| {int(np.median(unique))} | {flagged}/{args.trials} "
                  f"| {_median(mmd_p):.3g} | {_median(bbsd_p):.3g} | {_median(conf):.2f} "
                  f"| {fired_text} |", flush=True)  # fmt: skip
    ref_conf = reference.sample.confidence.mean()
    print(f"\nreference: {len(reference)} validation photos, mean confidence {ref_conf:.2f}; "
          f"alpha {settings.alpha} over {', '.join(settings.alert)} (each test at "
          f"{settings.alpha_per_test():.3f}); {settings.permutations} permutations; one drift "
          f"check {np.median(check_seconds) * 1000:.0f} ms median")  # fmt: skip
    for keep in (False, True):
        print(record_latency(class_names, load["traffic"], probs["traffic"], emb["traffic"], keep,
                             args.record_calls))  # fmt: skip
    print(predict_latency(classifier, load["traffic"], args.decode_size, 20))
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
