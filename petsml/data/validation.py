"""Validate the manifest with Great Expectations before anything trains on it.

Three tables are checked, each by its own expectation suite, validation definition and checkpoint
in one throw-away (ephemeral) GX context whose only file output is a Data Docs site:

* ``usable_images``: listed rows whose file exists, decodes and is at least
  ``validate.min_width`` x ``validate.min_height``. Hard (``critical``) checks on names, species,
  class ids, splits, ids and hashes; ``info`` counts of files that are not RGB JPEGs (kept:
  loaders convert them).
* ``breed_counts``: usable images per breed, within ``validate.min/max_images_per_breed``.
* ``files``: every manifest row; ``warning`` checks that every file exists, decodes, is listed
  and (when it decodes) is large enough. Their failures are the quarantine, not a reason to stop.

Only failed ``critical`` expectations stop the pipeline (:class:`DataValidationError`), and only
after ``summary.json``, the GX results and Data Docs are written, so the user can look: they are
the dataset-level problems (missing breeds, duplicates, too few photos, wrong labels). One bad
photo never stops it. The quarantine (``data/quarantine.csv``: image_id, file, reason, detail;
reasons and why in :mod:`petsml.data.quarantine`) lists the rows later stages leave out.

The suites and the GX run are :mod:`petsml.data.expectations`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from petsml.config import ValidateParams
from petsml.data.breeds import BREEDS, CLASS_ID, species_of
from petsml.data.expectations import CRITICAL, EXAMPLES, run_checkpoints
from petsml.data.quarantine import (  # noqa: F401 - re-exported: the quarantine's home was here
    LIMIT_KEY,
    QUARANTINE_COLUMNS,
    REASONS,
    nested,
    quarantine_reasons,
    quarantine_table,
    too_large,
    too_small,
)
from petsml.errors import PetsError
from petsml.io import atomic_dir, atomic_path, write_json

log = logging.getLogger(__name__)

DOCS_DIR = "data_docs"
SUMMARY_FILE = "summary.json"
RESULTS_FILE = "gx_results.json"


class DataValidationError(PetsError):
    """A hard data check failed; the message names each failed expectation with examples."""


@dataclass(frozen=True)
class LabelRules:
    """What a source's labels must satisfy: the class names (index = class id), whether the
    Oxford species rule and the all-breeds check apply, and the usable images per class, with
    the params keys that set them (named in the checks and in the error)."""

    classes: tuple[str, ...]
    species: bool
    require_all: bool
    min_images: int
    max_images: int | None
    unit: str  # "breed" (official) or "class" (a folder): check names and params keys
    fix: str  # what to do when a hard check fails

    @property
    def bounds_keys(self) -> str:
        return f"validate.min_images_per_{self.unit} / max_images_per_{self.unit}"


def official_rules(params: ValidateParams) -> LabelRules:
    """The Oxford-IIIT Pet rules: 37 official breeds, the species rule, the per-breed bounds."""
    return LabelRules(
        classes=BREEDS,
        species=True,
        require_all=params.require_all_breeds,
        min_images=params.min_images_per_breed,
        max_images=params.max_images_per_breed,
        unit="breed",
        fix="Fix the data (re-run the download and manifest stages) or, for a subset or a "
        "mirror, adjust validate.* in params.yaml.",
    )


def folder_rules(params: ValidateParams, classes: list[str], folder: str) -> LabelRules:
    """An image folder's rules: its own class folders, the per-class bounds."""
    return LabelRules(
        classes=tuple(classes),
        species=False,
        require_all=False,  # every class folder is a class: an empty one fails the count
        min_images=params.min_images_per_class,
        max_images=params.max_images_per_class,
        unit="class",
        fix=f"Fix the photos in {folder} (add photos to a class short of them, remove "
        "duplicates) or adjust validate.min_images_per_class / max_images_per_class in "
        "params.yaml.",
    )


@dataclass
class ValidationSummary:
    """What :func:`validate_manifest` found; ``to_dict()`` is ``summary.json``."""

    success: bool
    counts: dict[str, Any]
    expectations: list[dict[str, Any]]
    quarantine: pd.DataFrame = field(repr=False)
    out_dir: Path = Path(".")
    fix: str = ""

    @property
    def failed(self) -> list[dict[str, Any]]:
        """Failed hard (critical) expectations."""
        return [e for e in self.expectations if not e["success"] and e["severity"] == CRITICAL]

    @property
    def data_docs(self) -> Path:
        return self.out_dir / DOCS_DIR / "index.html"

    def to_dict(self) -> dict[str, Any]:
        return {
            "success": self.success,
            "failed": [e["name"] for e in self.failed],
            "counts": self.counts,
            "expectations": self.expectations,
            "data_docs": f"{DOCS_DIR}/index.html",
        }

    def describe_failures(self) -> str:
        lines = [f"{len(self.failed)} hard data check(s) failed:"]
        for exp in self.failed:
            lines.append(f"  - {exp['name']} ({_call(exp)} on table {exp['table']}): {_what(exp)}")
            lines.extend(f"      e.g. {_example(example)}" for example in exp["examples"])
        lines.append(
            f"Details: {self.out_dir / SUMMARY_FILE}; Data Docs: {self.data_docs}. "
            f"Quarantined files do not cause this. {self.fix}"
        )
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Tables (plain pandas): what GX validates, and the quarantine.


def usable_images(
    manifest: pd.DataFrame,
    params: ValidateParams,
    rules: LabelRules | None = None,
    max_pixels: int | None = None,
) -> pd.DataFrame:
    """Listed rows the quarantine leaves, plus the class id and species their name implies."""
    flags = manifest[["listed", "exists", "decodable"]].astype(bool)
    reason, _ = quarantine_reasons(manifest, params, max_pixels)
    keep = flags["listed"] & flags["exists"] & flags["decodable"] & (reason == "")
    rows = manifest.loc[keep].reset_index(drop=True)
    class_id = (
        CLASS_ID if rules is None else {name: index for index, name in enumerate(rules.classes)}
    )
    rows["class_id_by_name"] = rows["breed"].map(lambda b: class_id.get(b, -1)).astype(int)
    rows["species_by_name"] = rows["breed"].astype(str).map(species_of)
    return rows


def breed_counts(manifest: pd.DataFrame, usable: pd.DataFrame) -> pd.DataFrame:
    """Usable images per breed, for every breed named by a listed row (0 when all quarantined)."""
    listed_breeds = manifest.loc[manifest["listed"].astype(bool), "breed"].unique()
    counts = usable["breed"].value_counts().reindex(sorted(listed_breeds), fill_value=0)
    return counts.rename_axis("breed").rename("usable_images").reset_index()


def _counts(manifest: pd.DataFrame, usable: pd.DataFrame, quarantine: pd.DataFrame) -> dict:
    converted = usable[(usable["format"] != "JPEG") | (usable["mode"] != "RGB")]
    by_kind = (converted["format"] + "/" + converted["mode"]).value_counts().sort_index()
    unlisted = manifest[~manifest["listed"].astype(bool) & manifest["decodable"].astype(bool)]
    reasons = quarantine["reason"].value_counts()
    return {
        "rows": len(manifest),
        "listed": int(manifest["listed"].astype(bool).sum()),
        "usable": len(usable),
        "breeds": int(usable["breed"].nunique()),
        "quarantined": {reason: int(reasons.get(reason, 0)) for reason in REASONS},
        "quarantined_total": len(quarantine),
        "converted": {kind: int(n) for kind, n in by_kind.items()},
        "converted_total": len(converted),
        "unlisted": len(unlisted),
        "unlisted_examples": unlisted["file"].head(EXAMPLES).tolist(),
    }


def _call(exp: dict[str, Any]) -> str:
    def show(v: Any) -> Any:  # GX stores bounds as floats: 150.0 -> 150
        return int(v) if isinstance(v, float) and v.is_integer() else v

    args = ", ".join(f"{k}={show(v)}" for k, v in exp["kwargs"].items())
    return f"{exp['expectation_type']}({args})"


def _what(exp: dict[str, Any]) -> str:
    if exp.get("exception"):
        return f"raised {exp['exception']}"
    if exp["expectation_type"] == "expect_column_distinct_values_to_contain_set":
        return f"{exp['unexpected_count']} expected value(s) absent"
    if exp["unexpected_count"] is not None and exp["element_count"] is not None:
        return f"{exp['unexpected_count']} of {exp['element_count']} rows unexpected"
    return f"observed {exp.get('observed_value')!r}"


def _example(example: Any) -> str:
    if isinstance(example, dict):
        return " ".join(f"{k}={v}" for k, v in example.items())
    return str(example)


# --------------------------------------------------------------------------------------------


def validate_manifest(
    manifest: pd.DataFrame,
    params: ValidateParams,
    out_dir: Path,
    quarantine_path: Path,
    rules: LabelRules | None = None,
    max_pixels: int | None = None,
) -> ValidationSummary:
    """Check the manifest, write quarantine, summary and Data Docs; raise on hard failures.

    ``rules`` are the source's label rules (default: the official dataset's); ``max_pixels``
    the one pixel limit (``serve.max_pixels``; None: no limit). ``out_dir`` is
    replaced as a whole (``summary.json``, ``gx_results.json``, ``data_docs/``). Raises
    :class:`DataValidationError` after writing everything if a critical check failed.
    """
    out_dir, quarantine_path = Path(out_dir), Path(quarantine_path)
    rules = rules or official_rules(params)
    quarantine = quarantine_table(manifest, params, max_pixels)
    usable = usable_images(manifest, params, rules, max_pixels)
    tables = {
        "usable_images": usable,
        "breed_counts": breed_counts(manifest, usable),
        "files": manifest.reset_index(drop=True),
    }
    counts = _counts(manifest, usable, quarantine)
    with atomic_path(quarantine_path, suffix=".csv") as tmp:
        quarantine.to_csv(tmp, index=False)
    with atomic_dir(out_dir) as tmp_dir:
        checks, raw = run_checkpoints(tables, params, tmp_dir / DOCS_DIR, rules)
        summary = ValidationSummary(
            success=not any(not c["success"] and c["severity"] == CRITICAL for c in checks),
            counts=counts,
            expectations=checks,
            quarantine=quarantine,
            out_dir=out_dir,
            fix=rules.fix,
        )
        write_json(tmp_dir / SUMMARY_FILE, summary.to_dict())
        write_json(tmp_dir / RESULTS_FILE, raw)
    log.info(
        "validation: %d usable of %d listed; quarantined %s; converted %s; %d unlisted",
        counts["usable"],
        counts["listed"],
        counts["quarantined"],
        counts["converted"],
        counts["unlisted"],
    )
    if not summary.success:
        raise DataValidationError(summary.describe_failures())
    return summary
