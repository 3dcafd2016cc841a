"""Similar-photo search: which exact search to ship, whether neighbours mean anything, how fast.

1. search: exact k-nearest neighbours by cosine on L2-normalised 1280-d vectors (EfficientNet-
   Lite0's embedding size) at 7,349 (the whole Oxford-IIIT Pet) and 100,000 rows, for one query
   (a web upload) and a batch of 64: the project's numpy matmul (``NeighbourIndex.search``, the
   baseline), scikit-learn ``NearestNeighbors(algorithm="brute", metric="cosine")`` and faiss
   ``IndexFlatIP`` (skipped, with the reason, when faiss-cpu is not installed). Each line: ms per
   call (median of repeats), ratio against numpy, and whether its neighbours equal numpy's.
2. quality (FOLDER, default ../shared/pets-sample; skipped with --no-photos): the pretrained
   backbone's embeddings (what every frozen-feature strategy's registered model ships) of the
   official trainval photos as the index; the share of index photos whose nearest OTHER photo has
   the same breed (leave-one-out), and the test photos' nearest-neighbour breed accuracy.
3. latency: prediction + 8 neighbours per photo through the served model's own code
   (``PetClassifierModel.predict`` on a base64 photo, ``params={"neighbours": 8}``), p50/p95 ms
   over the test photos.

    python -m benchmarks.similar [FOLDER] [--sizes 7349 100000] [--no-photos]

Prints the CPU model and flags, torch/numpy thread counts and precision (float32 throughout).
"""

from __future__ import annotations

import argparse
import base64
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from petsml.similar.index import NeighbourIndex, normalise

ROOT = Path(__file__).resolve().parents[1]
DIM = 1280
K = 8


def machine() -> str:
    model, flags = platform.processor() or "?", []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                wanted = ("avx", "fma", "bf16", "amx", "vnni")
                flags = [f for f in line.split(":", 1)[1].split() if f.startswith(wanted)]
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"cpu {model!r} ({os.cpu_count()} cores) flags [{' '.join(flags)}] "
        f"load average {load:.1f}; float32"
    )


def timed(fn, repeats: int) -> tuple[float, object]:
    result = fn()  # warm-up (and the answer)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000, result


def search_methods(vectors: np.ndarray):
    """name -> (build seconds, search(queries) -> rows (Q, K)) or a reason it is unavailable."""
    methods = {}
    start = time.perf_counter()
    index = NeighbourIndex(vectors, *(np.zeros(len(vectors), dtype=str),) * 3)
    methods["numpy matmul"] = (time.perf_counter() - start, lambda q: index.search(q, K)[1])

    from sklearn.neighbors import NearestNeighbors

    start = time.perf_counter()
    nn = NearestNeighbors(n_neighbors=K, algorithm="brute", metric="cosine").fit(vectors)
    methods["sklearn brute cosine"] = (
        time.perf_counter() - start,
        lambda q: nn.kneighbors(q, return_distance=False),
    )
    try:
        import faiss
    except ImportError as error:
        methods["faiss IndexFlatIP"] = f"skipped: {error} (pip install faiss-cpu)"
    else:
        start = time.perf_counter()
        flat = faiss.IndexFlatIP(vectors.shape[1])
        flat.add(vectors)
        methods["faiss IndexFlatIP"] = (time.perf_counter() - start,
                                        lambda q: flat.search(q, K)[1])  # fmt: skip
    return methods


def bench_search(sizes: list[int], seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    # clustered like real embeddings (37 breeds), not uniform noise, so the top-k is meaningful
    centres = normalise(rng.standard_normal((37, DIM)))
    for n in sizes:
        vectors = normalise(centres[rng.integers(0, 37, n)] + 0.8 * normalise(
            rng.standard_normal((n, DIM))))  # fmt: skip
        print(f"\n[search] {n:,} rows x {DIM} float32, k={K}, exact")
        methods = search_methods(vectors)
        for q in (1, 64):
            queries = vectors[rng.integers(0, n, q)] + 0.01 * rng.standard_normal((q, DIM))
            queries = normalise(queries)
            repeats = 20 if n < 50_000 else 5
            base_ms, base_rows = None, None
            for name, method in methods.items():
                if isinstance(method, str):
                    print(f"  {name:<22} {method}")
                    continue
                build_s, search = method
                ms, rows = timed(lambda search=search, queries=queries: search(queries), repeats)
                rows = np.asarray(rows)
                if base_ms is None:
                    base_ms, base_rows = ms, rows
                same = np.mean([set(a) == set(b) for a, b in zip(rows, base_rows, strict=True)])
                print(
                    f"  {name:<22} {q:>3} queries: {ms:8.2f} ms/call  {base_ms / ms:5.2f}x "
                    f"numpy  same top-{K} {same:.0%}  (build {build_s:.2f} s)"
                )


def _official(folder: Path) -> tuple[list[str], list[str]]:
    def ids(name: str) -> list[str]:
        lines = (folder / "annotations" / name).read_text().split("\n")
        return [line.split()[0] for line in lines if line.strip() and not line.startswith("#")]

    return ids("trainval.txt"), ids("test.txt")


def bench_photos(folder: Path) -> None:
    import pandas as pd
    import torch

    from petsml.data.breeds import breed_of
    from petsml.data.decode import load_rgb
    from petsml.models.backbones import create_backbone
    from petsml.models.classifier import Classifier, save_classifier
    from petsml.similar.embed import embed
    from petsml.tracking.pyfunc import PetClassifierModel

    torch.manual_seed(0)
    trainval, test = _official(folder)
    trainval = [i for i in trainval if (folder / "images" / f"{i}.jpg").is_file()]
    test = [i for i in test if (folder / "images" / f"{i}.jpg").is_file()]
    backbone = create_backbone("efficientnet_lite0", pretrained=True)
    model = Classifier(backbone, 37).eval()
    size = 256
    print(f"\n[quality] {folder}: {len(trainval)} trainval photos indexed, {len(test)} test "
          f"queries; efficientnet_lite0 ImageNet features, torch threads "
          f"{torch.get_num_threads()}")  # fmt: skip
    start = time.perf_counter()
    pixels = np.stack([load_rgb(folder / "images" / f"{i}.jpg", size) for i in trainval + test])
    vectors = embed(model, pixels)
    print(f"  embedded {len(pixels)} photos in {time.perf_counter() - start:.1f} s")
    breeds = [breed_of(i) for i in trainval + test]
    n = len(trainval)
    files = [f"images/{i}.jpg" for i in trainval]
    index = NeighbourIndex.build(vectors[:n], trainval, breeds[:n], files)
    print(f"  leave-one-out: nearest other trainval photo has the same breed: "
          f"{index.leave_one_out_agreement():.3f}")  # fmt: skip
    _, rows = index.search(vectors[n:], 1)
    nn_acc = float(np.mean(index.breed[rows[:, 0]] == np.array(breeds[n:])))
    print(f"  test photos: nearest trainval photo's breed = the photo's breed: {nn_acc:.3f}")

    with tempfile.TemporaryDirectory() as tmp:
        from petsml.data.breeds import BREEDS

        save_classifier(model, Path(tmp) / "model.pt", {"strategy": "bench", "task": "breed",
                        "class_names": list(BREEDS), "decode_size": size,
                        "backbone": "efficientnet_lite0"})  # fmt: skip
        index.save(Path(tmp) / "index.npz")
        served = PetClassifierModel()
        artifacts = {"model": str(Path(tmp) / "model.pt"),
                     "neighbours": str(Path(tmp) / "index.npz")}  # fmt: skip
        served.load_context(SimpleNamespace(artifacts=artifacts, model_config={}))
        times = []
        for image_id in test:
            data = base64.b64encode((folder / "images" / f"{image_id}.jpg").read_bytes()).decode()
            frame = pd.DataFrame({"image": [data]})
            start = time.perf_counter()
            out = served.predict(None, frame, params={"neighbours": K})
            times.append((time.perf_counter() - start) * 1000)
            assert not out["error"][0], out["error"][0]
        times.sort()
        p50, p95 = times[len(times) // 2], times[min(len(times) - 1, int(0.95 * len(times)))]
        print(f"\n[latency] prediction + {K} neighbours per photo (base64 JPEG in, served code, "
              f"{len(times)} photos, 1 per call): p50 {p50:.0f} ms, p95 {p95:.0f} ms")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", nargs="?", default=str(ROOT.parent / "shared" / "pets-sample"))
    parser.add_argument("--sizes", type=int, nargs="+", default=[7349, 100_000])
    parser.add_argument("--no-photos", action="store_true", help="search timings only")
    args = parser.parse_args()
    print(machine())
    bench_search(args.sizes)
    folder = Path(args.folder)
    if args.no_photos:
        return
    if not (folder / "annotations" / "trainval.txt").is_file():
        print(f"\n[quality] skipped: {folder} has no annotations/trainval.txt")
        return
    bench_photos(folder)


if __name__ == "__main__":
    main()
