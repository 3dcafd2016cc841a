"""Show the transfer-learning rule both ways: the advice against every strategy, on two datasets.

(a) real pet photos (``../shared/pets-sample``, packed as the official archives) and (b) a
dataset unlike ImageNet: scikit-learn's bundled 8x8 handwritten digits, upscaled and written as
an image folder (``data.source: folder``). For each, in a throw-away copy of this repo:
``dvc repro decode`` (the data stages), ``dvc repro advise`` (timed), then ``dvc repro
evaluate`` with every strategy. Prints one table: dataset, size cell, similarity cell, the
recommended strategy, the best strategy by validation and by test accuracy, the probe curve's
peak block; then each strategy's accuracies, the stage times, the CPU flags and the precision.

    python benchmarks/advice.py [--pets FOLDER] [--digits-per-class 40] [--epochs 3] [-S k=v ...]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from petsml.config import STRATEGIES  # noqa: E402
from tests.fakedata import pack_archives  # noqa: E402
from tests.project import dvc, fake_data_params, make_project, tool_env  # noqa: E402

DIGIT_SIDE = 64  # 8x8 digits upscaled (nearest: the blocky strokes stay as they are)


def write_digits(folder: Path, per_class: int, seed: int = 0) -> int:
    """scikit-learn's bundled digits as ``<folder>/<digit>/<n>.png``: ``per_class`` each."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    written = 0
    for digit in range(10):
        rows = np.flatnonzero(digits.target == digit)
        chosen = rng.choice(rows, size=min(per_class, len(rows)), replace=False)
        (folder / str(digit)).mkdir(parents=True, exist_ok=True)
        for row in sorted(chosen):
            pixels = (digits.images[row] * (255 / 16)).clip(0, 255).astype(np.uint8)
            image = Image.fromarray(255 - pixels, "L").resize(
                (DIGIT_SIDE, DIGIT_SIDE), Image.Resampling.NEAREST
            )
            image.convert("RGB").save(folder / str(digit) / f"{row:04d}.png")
            written += 1
    return written


def machine() -> str:
    """CPU model, its vector and bf16 flags, torch threads and the precision the runs used."""
    import torch

    from petsml.models.precision import use_bf16

    model, flags = platform.processor() or "?", []
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
                flags = [f for f in line.split(":", 1)[1].split() if f in wanted]
                break
    bf16 = use_bf16(torch.device("cpu"), "auto")
    return (
        f"cpu {model!r} flags [{' '.join(flags) or 'none'}], torch threads "
        f"{torch.get_num_threads()}, precision {'bf16 autocast' if bf16 else 'fp32'} "
        "(model.precision auto)"
    )


def _timed(project: Path, env: dict, *args: str) -> float:
    started = time.perf_counter()
    dvc(project, "repro", *args, env=env, timeout=14400)
    return time.perf_counter() - started


def run_dataset(name: str, project: Path, env: dict) -> dict:
    times = {
        "data": _timed(project, env, "decode"),
        "advise": _timed(project, env, "advise"),
        "train+evaluate": _timed(project, env, "evaluate"),
    }
    advice = json.loads((project / "reports/advice.json").read_text())
    metrics = json.loads((project / "reports/metrics.json").read_text())
    similarity = advice["similarity"]

    def best(key: str) -> str:
        """The best strategy by ``key``, or every one tied with it (``a = b``): a tie is the
        honest answer on a few dozen photos, not the alphabetically first of the tied."""
        top = max(m[key] for m in metrics.values())
        return " = ".join(s for s in sorted(metrics) if metrics[s][key] == top)

    return {
        "dataset": name,
        "size": advice["size"]["verdict"],
        "per_class": advice["size"]["train_per_class_median"],
        "similarity": similarity["verdict"],
        "recommended": advice["strategy"],
        "best_val": best("val_accuracy"),
        "best_test": best("test_accuracy"),
        "peak": f"{similarity['peak_block']} of {similarity['blocks'] - 1}",
        "probe": [round(p["mean_pool_val_accuracy"], 2) for p in similarity["probe"]],
        "metrics": metrics,
        "times": times,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pets", default=str(ROOT.parent / "shared" / "pets-sample"))
    parser.add_argument("--digits-per-class", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--dataset", choices=("pets", "digits"), action="append",
                        help="only these (default both); a row is printed when done")  # fmt: skip
    parser.add_argument("-S", "--set", action="append", default=[], help="params key=value")
    args = parser.parse_args()
    wanted = args.dataset or ["pets", "digits"]
    common = {
        "train.strategies": list(STRATEGIES),
        "train.epochs": args.epochs,
        "decode.size": 256,
        "decode.workers": 2,
    }
    common |= {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        env = tool_env(MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path}/mlflow.db")

        if "pets" in wanted:
            md5 = pack_archives(Path(args.pets), tmp_path / "mirror")
            pets = fake_data_params(str(tmp_path / "mirror"), md5) | {
                "validate.min_images_per_breed": 1,
                "validate.max_images_per_breed": 250,
            }
            project = make_project(tmp_path / "pets", pets | common)
            rows.append(run_dataset("pets-sample (real photos)", project, env))
            print(json.dumps(rows[-1], default=str), flush=True)
        if "digits" in wanted:
            n = write_digits(tmp_path / "digits", args.digits_per_class)
            digits = {"data.source": "folder", "data.folder": str(tmp_path / "digits")}
            project = make_project(tmp_path / "digits-project", digits | common)
            rows.append(run_dataset(f"sklearn digits ({n} images, 8x8 upscaled)", project, env))
            print(json.dumps(rows[-1], default=str), flush=True)

    header = ("dataset", "size cell", "similarity cell", "recommended", "best by val",
              "best by test", "probe peak block")  # fmt: skip
    print("| " + " | ".join(header) + " |")
    print("|" + " --- |" * len(header))
    for r in rows:
        cells = (r["dataset"], f"{r['size']} ({r['per_class']:g} train/class)", r["similarity"],
                 r["recommended"], r["best_val"], r["best_test"], r["peak"])  # fmt: skip
        print("| " + " | ".join(map(str, cells)) + " |")
    print()
    for r in rows:
        print(f"{r['dataset']}: probe accuracy by block (mean pool) {r['probe']}")
        for name, m in r["metrics"].items():
            print(f"  {name:<18} val {m['val_accuracy']:.3f} test {m['test_accuracy']:.3f} "
                  f"train {m['train_seconds']:.0f} s")  # fmt: skip
        times = ", ".join(f"{k} {v:.0f} s" for k, v in r["times"].items())
        print(f"  stages: {times}")
    print(machine())


if __name__ == "__main__":
    main()
