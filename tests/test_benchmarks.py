"""The benchmarks still run (tiny settings, CPU): a figure in the README must stay reproducible."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_finetune_full_benchmark_prints_all_three_paths_and_a_speedup():
    cmd = [
        sys.executable, str(REPO / "benchmarks" / "finetune_full.py"), "--device", "cpu",
        "--backbone", "test_efficientnet", "--batch-size", "4", "--images", "12",
        "--epochs", "1", "--workers", "1",
    ]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    figures = dict(
        re.findall(r"^  (naive|project|model only)\b.*?([\d.]+) images/s", out.stdout, re.M)
    )
    assert set(figures) == {"naive", "project", "model only"}, out.stdout
    assert all(float(v) > 0 for v in figures.values())
    assert re.search(r"^speedup: \d+\.\d\d$", out.stdout, re.M), out.stdout


def test_similar_benchmark_compares_exact_searches_that_agree():
    cmd = [sys.executable, str(REPO / "benchmarks" / "similar.py"), "--sizes", "400", "--no-photos"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.startswith("cpu ") and "load average" in out.stdout
    pattern = r"^  (numpy matmul|sklearn brute cosine)\s+(1|64) queries: .*same top-8 (\d+)%"
    lines = re.findall(pattern, out.stdout, re.M)
    assert len(lines) == 4, out.stdout
    assert all(same == "100" for *_, same in lines), out.stdout  # exact: the same neighbours
    assert "faiss IndexFlatIP" in out.stdout  # timed, or skipped with the reason
