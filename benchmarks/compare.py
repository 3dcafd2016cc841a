"""The compare stage's cost beside the pipeline before it, on real photos (../shared/pets-sample).

Runs, in a throw-away copy of this repo pointed at FOLDER (default params otherwise):
``dvc repro evaluate`` (everything before the comparison, timed), then ``dvc repro compare``
(timed), and prints the comparison as ``pets report`` does and the compare stage's share of the
time. The latency columns depend on the machine and on its load: say which when quoting them.

    python -m benchmarks.compare [FOLDER] [-S key=value ...]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import yaml

from benchmarks.sample_project import DEFAULT_SAMPLE, repro, sample_project
from petsml.evaluation.results import render_text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", nargs="?", default=str(DEFAULT_SAMPLE))
    parser.add_argument("-S", "--set", action="append", default=[], help="params key=value")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        overrides = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)}
        project, env = sample_project(Path(args.folder), Path(tmp), overrides)
        before_s = repro(project, env, "evaluate")
        compare_s = repro(project, env, "compare")
        report = json.loads((project / "reports/comparison.json").read_text())
    print(render_text(report))
    print(f"CPU threads: {os.cpu_count()}, load average: {os.getloadavg()[0]:.1f}")
    print(
        f"pipeline up to evaluate {before_s:.0f} s, compare {compare_s:.0f} s: compare is "
        f"{100 * compare_s / (before_s + compare_s):.1f}% of the pipeline up to it"
    )


if __name__ == "__main__":
    main()
