"""The compare stage's cost beside the pipeline before it, on real photos (../shared/pets-sample).

Runs, in a throw-away copy of this repo pointed at FOLDER (default params otherwise):
``dvc repro evaluate`` (everything before the comparison, timed), then ``dvc repro compare``
(timed), and prints the comparison as ``pets report`` does and the compare stage's share of the
time. The latency columns depend on the machine and on its load: say which when quoting them.

    python benchmarks/compare.py [FOLDER] [-S key=value ...]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from petsml.evaluation.results import render_text  # noqa: E402
from tests.fakedata import pack_archives  # noqa: E402
from tests.project import dvc, fake_data_params, make_project, tool_env  # noqa: E402


def _timed(project: Path, env: dict, *args: str) -> float:
    started = time.perf_counter()
    dvc(project, "repro", *args, env=env, timeout=7200)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", nargs="?", default=str(ROOT.parent / "shared" / "pets-sample"))
    parser.add_argument("-S", "--set", action="append", default=[], help="params key=value")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        md5 = pack_archives(Path(args.folder), tmp_path / "mirror")
        overrides = fake_data_params(str(tmp_path / "mirror"), md5) | {
            "decode.size": 256,
            "validate.min_images_per_breed": 1,
            "validate.max_images_per_breed": 250,
        }
        overrides |= {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)}
        project = make_project(tmp_path / "p", overrides)
        env = tool_env(MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path}/mlflow.db")
        before_s = _timed(project, env, "evaluate")
        compare_s = _timed(project, env, "compare")
        report = json.loads((project / "reports/comparison.json").read_text())
    print(render_text(report))
    print(f"CPU threads: {os.cpu_count()}, load average: {os.getloadavg()[0]:.1f}")
    print(
        f"pipeline up to evaluate {before_s:.0f} s, compare {compare_s:.0f} s: compare is "
        f"{100 * compare_s / (before_s + compare_s):.1f}% of the pipeline up to it"
    )


if __name__ == "__main__":
    main()
