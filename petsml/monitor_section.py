"""params.yaml's ``monitor:`` section: recording served predictions and judging their drift.

Types and bounds only, no defaults: params.yaml owns every value, and
:class:`petsml.monitoring.settings.MonitorSettings` is built from this section alone
(docs/MONITORING.md says what each key does and why its value is what it is).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from petsml.config_section import Section

DETECTORS = ("input", "prediction", "confidence", "image")


class MonitorParams(Section):
    # --- recording (serving side)
    log: bool  # record each answered photo of the served model, `pets web` and `pets predict`
    store: str = Field(min_length=1)  # SQLite file (relative to the server's cwd) or postgresql://
    keep_photos: bool  # keep the photo itself (personal data: opt in)
    max_rows: int = Field(ge=1)
    max_mb: float = Field(gt=0)
    rotation: Literal["drop", "archive"]
    archive_dir: str = Field(min_length=1)
    durable: bool
    # --- the window and its tests
    window: int = Field(ge=1)
    min_window: int = Field(ge=2)
    deduplicate: bool
    alpha: float = Field(gt=0, lt=1)
    alert: list[str] = Field(min_length=1)
    pca_components: int = Field(ge=1)
    permutations: int = Field(ge=1)
    domain_classifier: bool
    confidence_drop: float = Field(gt=0, le=1)
    low_confidence: float = Field(gt=0, le=1)
    low_share_rise: float = Field(gt=0, le=1)
    seed: int
    # --- outputs and the loop
    reports: str = Field(min_length=1)
    retrain_on_drift: bool

    @field_validator("alert")
    @classmethod
    def _known_detectors(cls, value: list[str]) -> list[str]:
        unknown = [name for name in value if name not in DETECTORS]
        if unknown:
            raise ValueError(
                f"{unknown[0]!r} is not a detector; use some of {', '.join(DETECTORS)}"
            )
        return value
