"""A project as the pipeline leaves it before the compare stage, compared in this process.

Reuses :func:`tests.tracking.build_project` (tiny random-init models, metrics, evaluation files)
and adds what compare reads besides: the decoded cache of its split photos
(:func:`tests.edge.decode_project`: the ONNX columns check parity on the test split and
calibrate int8 on train photos) and the advise stage's answer. The stage's ONNX columns run
as :data:`ONNX_SETTINGS` asks: fp32 and int8, few calibration photos and timed calls.
"""

from __future__ import annotations

import json
from pathlib import Path

from petsml.testing.project import shipped_section
from tests.edge import decode_project
from tests.tracking import build_project, tracking_from

ADVICE = {"cell": "small+similar", "strategy": "feature_extractor", "early_block": None}
ONNX_SETTINGS = {"onnx": True, "onnx_int8": True, "calibration": 16, "latency_runs": 3}


def compared_project(root: Path, advice: dict | None = ADVICE) -> tuple[Path, dict]:
    """:func:`build_project` plus a decoded cache and advice, through ``compare_all`` with the
    ONNX columns (as the stage runs it, the project as the cwd); returns (project,
    comparison.json)."""
    from petsml.compare_onnx import onnx_columns
    from petsml.config import load_params
    from petsml.evaluation.comparison import compare_all

    project = build_project(root)
    decode_project(project)
    if advice is not None:
        (project / "reports" / "advice.json").write_text(json.dumps(advice))
    with tracking_from(project, f"sqlite:///{root / 'unused.db'}"):
        compare_all(
            load_params(), extras=[onnx_columns(shipped_section("compare", **ONNX_SETTINGS))]
        )
    return project, json.loads((project / "reports" / "comparison.json").read_text())
