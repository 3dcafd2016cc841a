"""An exportable project: :func:`tests.tracking.build_project` plus the decoded cache it lacks.

``pets export`` measures parity on the test split and calibrates int8 on training photos from
``data/decoded``; the tracked test project has splits and raw photos but no cache, so this adds
one (every split, at the tiny model's decode size).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from petsml import paths
from petsml.data.decode import decode_images
from tests.models import DECODE_SIZE


def decode_project(project: Path) -> Path:
    """Decode every split of ``project`` into ``project/data/decoded``; returns that folder."""
    frame = pd.concat(
        pd.read_csv(project / paths.split_csv(name), keep_default_na=False)
        for name in paths.SPLIT_NAMES
    )
    out = project / paths.DECODED
    decode_images(frame, project / paths.RAW, out, DECODE_SIZE, workers=1)
    return out
