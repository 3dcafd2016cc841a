"""A project as the pipeline leaves it before the compare stage, compared in this process.

Reuses :func:`tests.tracking.build_project` (tiny random-init models, metrics, evaluation files)
and adds what compare reads besides: a small decoded cache (seeded random pixels: latency does
not depend on what the photos show) and the advise stage's answer.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tests.models import DECODE_SIZE
from tests.tracking import build_project, tracking_from

ADVICE = {"cell": "small+similar", "strategy": "feature_extractor", "early_block": None}


def write_decoded(project: Path, n: int = 12) -> None:
    """``data/decoded`` with ``n`` seeded random images in the cache's layout."""
    from petsml.data.decode import ARRAY, INDEX

    folder = project / "data" / "decoded"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    np.save(folder / ARRAY, rng.integers(0, 255, (n, DECODE_SIZE, DECODE_SIZE, 3), np.uint8))
    ids = "\n".join(f"img_{i},{i}" for i in range(n))
    (folder / INDEX).write_text(f"image_id,row\n{ids}\n")


def compared_project(root: Path, advice: dict | None = ADVICE) -> tuple[Path, dict]:
    """:func:`build_project` plus a decoded cache and advice, through ``compare_all`` (as the
    stage runs it, the project as the cwd); returns (project, comparison.json)."""
    from petsml.config import load_params
    from petsml.evaluation.comparison import compare_all

    project = build_project(root)
    write_decoded(project)
    if advice is not None:
        (project / "reports" / "advice.json").write_text(json.dumps(advice))
    with tracking_from(project, f"sqlite:///{root / 'unused.db'}"):
        compare_all(load_params())
    return project, json.loads((project / "reports" / "comparison.json").read_text())
