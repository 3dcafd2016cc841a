"""The advise stage's cost against the whole pipeline, on real photos (``../shared/pets-sample``).

Runs, in a throw-away copy of this repo pointed at FOLDER: ``dvc repro decode`` (the data
stages), then ``dvc repro advise`` (timed), then ``dvc repro`` (the rest, timed), and prints
the advice and the advise stage's share of the whole pipeline's time.

    python benchmarks/advise.py [FOLDER] [-S key=value ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fakedata import pack_archives  # noqa: E402
from tests.project import dvc, fake_data_params, make_project, tool_env  # noqa: E402


def _timed(project: Path, env: dict, *args: str) -> tuple[float, str]:
    started = time.perf_counter()
    result = dvc(project, "repro", *args, env=env, timeout=7200)
    return time.perf_counter() - started, result.stdout


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
        data_s, _ = _timed(project, env, "decode")
        advise_s, out = _timed(project, env, "advise")
        rest_s, _ = _timed(project, env)
        advice = json.loads((project / "reports/advice.json").read_text())
        print((project / "reports/advice.md").read_text())
        print(json.dumps(json.loads((project / "reports/metrics.json").read_text()), indent=1))
    total = data_s + advise_s + rest_s
    print([line for line in out.splitlines() if line.startswith("advice:")])
    print(f"advice: {advice['cell']} -> {advice['strategy']} (early_block {advice['early_block']})")
    print(
        f"data stages {data_s:.0f} s, advise {advise_s:.0f} s, the rest {rest_s:.0f} s: "
        f"advise is {100 * advise_s / total:.1f}% of the whole pipeline ({total:.0f} s)"
    )


if __name__ == "__main__":
    main()
