"""Strategies on real photos: the whole pipeline on ``../shared/pets-sample`` (or a folder).

Packs the folder as the official archives, points a throw-away copy of this repo at it
(``data.base_url`` = that folder), runs ``dvc repro`` with the strategies you name and prints
accuracy and training time per strategy from ``reports/metrics.json``.

    python -m benchmarks.strategies [FOLDER] [-s feature_extractor -s svm_early -s finetune_top]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from benchmarks.sample_project import DEFAULT_SAMPLE, repro, sample_project


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", nargs="?", default=str(DEFAULT_SAMPLE))
    parser.add_argument("-s", "--strategy", action="append", dest="strategies")
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()
    strategies = args.strategies or ["feature_extractor", "svm_early"]
    with tempfile.TemporaryDirectory() as tmp:
        project, env = sample_project(
            Path(args.folder),
            Path(tmp),
            {"train.strategies": strategies, "train.epochs": args.epochs},
        )
        total = repro(project, env)
        metrics = json.loads((project / "reports/metrics.json").read_text())
    print(
        f"{'strategy':<20}{'val acc':>9}{'test acc':>10}{'top-5':>8}{'macro F1':>10}"
        f"{'ECE':>7}{'train s':>9}"
    )
    for name, m in metrics.items():
        print(
            f"{name:<20}{m['val_accuracy']:>9.3f}{m['test_accuracy']:>10.3f}"
            f"{m['test_top5']:>8.3f}{m['test_macro_f1']:>10.3f}{m['test_ece']:>7.3f}"
            f"{m['train_seconds']:>9.1f}"
        )
    print(f"whole pipeline (dvc repro): {total:.0f} s")


if __name__ == "__main__":
    main()
