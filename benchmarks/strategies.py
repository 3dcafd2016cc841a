"""Strategies on real photos: the whole pipeline on ``../shared/pets-sample`` (or a folder).

Packs the folder as the official archives, points a throw-away copy of this repo at it
(``data.base_url`` = that folder), runs ``dvc repro`` with the strategies you name and prints
accuracy and training time per strategy from ``reports/metrics.json``.

    python benchmarks/strategies.py [FOLDER] [-s feature_extractor -s svm_early -s finetune_top]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fakedata import pack_archives  # noqa: E402
from tests.project import dvc, fake_data_params, make_project, tool_env  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", nargs="?", default=str(ROOT.parent / "shared" / "pets-sample"))
    parser.add_argument("-s", "--strategy", action="append", dest="strategies")
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()
    strategies = args.strategies or ["feature_extractor", "svm_early"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        md5 = pack_archives(Path(args.folder), tmp_path / "mirror")
        overrides = fake_data_params(str(tmp_path / "mirror"), md5) | {
            "decode.size": 256,
            "validate.min_images_per_breed": 1,
            "validate.max_images_per_breed": 250,
            "train.strategies": strategies,
            "train.epochs": args.epochs,
        }
        project = make_project(tmp_path / "p", overrides)
        env = tool_env(MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path}/mlflow.db")
        started = time.perf_counter()
        dvc(project, "repro", env=env, timeout=7200)
        total = time.perf_counter() - started
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
