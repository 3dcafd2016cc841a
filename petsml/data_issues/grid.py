"""The likely label errors as the web page's Models view shows them: a grid to review.

Read back from ``data/data_issues/label_issues.csv`` (the data_issues stage's ranked list), so
the page needs neither the features nor the report. Each cell is JSON-ready; the photo itself
comes from the page's own photo route by ``image_id``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from petsml import paths
from petsml.errors import PetsError

GRID_KEYS = (
    "rank", "image_id", "split", "given", "given_name", "suggested", "suggested_name",
    "self_confidence", "excluded",
)  # fmt: skip


def label_issue_grid(root: str | Path = ".", limit: int | None = None) -> list[dict[str, Any]]:
    """The likely label errors of the project at ``root``, most doubtful first (lowest
    self-confidence): per photo its ``image_id``, ``split``, the ``given`` and ``suggested``
    class ids and names, ``self_confidence`` (the out-of-fold probability of the given label)
    and whether it is ``excluded`` from training. At most ``limit`` cells; ``[]`` when the
    data_issues stage has not run."""
    path = Path(root) / paths.LABEL_ISSUES
    if not path.is_file():
        return []
    try:
        frame = pd.read_csv(path, keep_default_na=False, dtype={"image_id": str})
    except (OSError, ValueError, pd.errors.ParserError) as error:
        raise PetsError(f"{path}: unreadable ({error}); re-run `dvc repro data_issues`.") from None
    missing = [key for key in GRID_KEYS if key not in frame.columns]
    if missing:
        raise PetsError(f"{path}: lacks {', '.join(missing)}; re-run `dvc repro data_issues`.")
    frame = frame.sort_values(["self_confidence", "rank"], kind="stable")
    if limit is not None:
        frame = frame.head(limit)
    cells = []
    for row in frame.itertuples(index=False):
        cells.append({
            "rank": int(row.rank),
            "image_id": str(row.image_id),
            "split": str(row.split),
            "given": int(row.given),
            "given_name": str(row.given_name),
            "suggested": int(row.suggested),
            "suggested_name": str(row.suggested_name),
            "self_confidence": float(row.self_confidence),
            "excluded": str(row.excluded).lower() == "true",
        })  # fmt: skip
    return cells
