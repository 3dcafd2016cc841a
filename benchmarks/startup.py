"""What each stage costs before it does any work: its imports, in a fresh interpreter.

Every `dvc repro` starts each stage as a new ``python -m stages.<name>`` process, so what a stage
imports is paid on every run. For each stage module this prints the median seconds of
``import stages.<name>`` in a fresh interpreter (``--repeats`` runs, interleaved across stages so
load changes hit all alike), the peak RSS, and which heavy libraries it pulled in (a stage that
runs no network should import no torch).

    python -m benchmarks.startup [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from benchmarks.machine import header

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "timm", "torchvision", "sklearn", "mlflow", "great_expectations", "pandas")
PROBE = """
import json, resource, sys, time
started = time.perf_counter()
import {module}
seconds = time.perf_counter() - started
heavy = [name for name in {heavy!r} if name in sys.modules]
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({{"seconds": seconds, "heavy": heavy, "rss_mb": rss}}))
"""


def stage_modules() -> list[str]:
    return sorted(
        f"stages.{path.stem}" for path in (ROOT / "stages").glob("*.py") if path.stem != "__init__"
    )


def probe(module: str) -> dict:
    script = PROBE.format(module=module, heavy=HEAVY)
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, check=True,
                         capture_output=True, text=True)  # fmt: skip
    return json.loads(out.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(header())
    modules = stage_modules()
    runs: dict[str, list[dict]] = {m: [] for m in modules}
    for _ in range(args.repeats):
        for module in modules:
            runs[module].append(probe(module))
    print("| stage module | import s (median) | peak RSS MB | heavy libraries imported |")
    print("| --- | --- | --- | --- |")
    for module, found in runs.items():
        seconds = statistics.median(r["seconds"] for r in found)
        rss = statistics.median(r["rss_mb"] for r in found)
        heavy = ", ".join(found[-1]["heavy"]) or "none"
        print(f"| `{module}` | {seconds:.2f} | {rss:.0f} | {heavy} |")


if __name__ == "__main__":
    main()
