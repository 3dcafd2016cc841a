"""``python -m benchmarks.record_overhead`` runs (tiny network, generated photos) and prints the
machine, the precision and both latencies, and the recording model really recorded."""

from __future__ import annotations

import numpy as np
import pytest

from petsml.testing.fakedata import class_image

pytestmark = pytest.mark.integration


def test_the_overhead_benchmark_names_its_machine_and_measures_both(tmp_path, capsys):
    from benchmarks.record_overhead import main

    for i in range(4):
        class_image(i, np.random.default_rng(i), (60, 48)).save(tmp_path / f"p{i}.jpg")
    main([str(tmp_path), "--photos", "3", "--warmup", "1", "--backbone", "test_efficientnet",
          "--decode-size", "40", "--image-size", "32"])  # fmt: skip
    out = capsys.readouterr().out
    assert out.startswith("machine: cpu ") and "flags [" in out and "precision fp32" in out
    rows = {line.split("|")[1].strip() for line in out.splitlines() if line.startswith("| ")}
    assert {"off", "on", "Recorder.record alone"} <= rows
    assert "3 photos, one per predict call" in out
