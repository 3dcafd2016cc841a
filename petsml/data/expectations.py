"""The manifest's expectation suites, and one ephemeral Great Expectations run over them.

:mod:`petsml.data.validation` builds the three tables and decides what a failure means; this
module is its one door to GX (the layers contract allows no other in the domain code). GX is
imported lazily, inside the functions: importing :mod:`petsml.data` never pays its start-up cost.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from petsml.config import ValidateParams
from petsml.data.breeds import SPECIES

if TYPE_CHECKING:
    from petsml.data.validation import LabelRules

OFFICIAL_SPLITS = ("trainval", "test")
EXAMPLES = 5  # example rows per failed expectation in the summary and the error message
CRITICAL, WARNING, INFO = "critical", "warning", "info"

# Expectation suites.


def suites(params: ValidateParams, rules: LabelRules) -> dict[str, list[Any]]:
    """Table name -> GX expectations; each carries its short check name in ``meta["check"]``."""
    import great_expectations.expectations as gxe
    from great_expectations.expectations.row_conditions import Column

    def check(name: str, kind: type, severity: str = CRITICAL, **kwargs: Any) -> Any:
        return kind(meta={"check": name}, severity=severity, **kwargs)

    official = list(rules.classes)
    species = [
        check("species_is_cat_or_dog", gxe.ExpectColumnValuesToBeInSet, column="species",
              value_set=list(SPECIES)),
        # The dataset's rule: capitalised breed names are cats, lower-case names are dogs.
        check("species_matches_breed_case", gxe.ExpectColumnPairValuesToBeEqual,
              column_A="species", column_B="species_by_name"),
    ] if rules.species else []  # fmt: skip
    known = "breed_is_official" if rules.unit == "breed" else "class_is_a_class_folder"
    images = [
        check("has_usable_images", gxe.ExpectTableRowCountToBeBetween, min_value=1),
        check(known, gxe.ExpectColumnValuesToBeInSet, column="breed", value_set=official),
        *species,
        check(f"class_id_matches_{rules.unit}", gxe.ExpectColumnPairValuesToBeEqual,
              column_A="class_id", column_B="class_id_by_name"),
        # An id in both official splits appears twice (or with a split outside the two).
        check("image_id_unique", gxe.ExpectColumnValuesToBeUnique, column="image_id"),
        check("split_is_trainval_or_test", gxe.ExpectColumnValuesToBeInSet, column="split",
              value_set=list(OFFICIAL_SPLITS)),
        check("sha256_unique", gxe.ExpectColumnValuesToBeUnique, column="sha256"),
        # Kept and converted to RGB by the loaders; reported so the count is visible.
        check("format_is_jpeg", gxe.ExpectColumnValuesToBeInSet, INFO, column="format",
              value_set=["JPEG"]),
        check("mode_is_rgb", gxe.ExpectColumnValuesToBeInSet, INFO, column="mode",
              value_set=["RGB"]),
    ]  # fmt: skip
    if rules.require_all:
        images.insert(2, check("all_breeds_present", gxe.ExpectColumnDistinctValuesToContainSet,
                               column="breed", value_set=official))  # fmt: skip
    counts = [
        check(f"images_per_{rules.unit}_in_range", gxe.ExpectColumnValuesToBeBetween,
              column="usable_images", min_value=rules.min_images,
              max_value=rules.max_images),
    ]  # fmt: skip
    # Non-fatal: what fails here is the quarantine (and the unlisted files), not a stop.
    # Sizes are checked where a listed file decoded (an undecodable one has no size).
    listed, decodable = Column("listed"), Column("decodable")
    decoded = {"row_condition": (listed == True) & (decodable == True)}  # noqa: E712
    files = [
        check("file_exists", gxe.ExpectColumnValuesToBeInSet, WARNING, column="exists",
              value_set=[True]),
        check("file_decodable", gxe.ExpectColumnValuesToBeInSet, WARNING, column="decodable",
              value_set=[True]),
        check("file_listed", gxe.ExpectColumnValuesToBeInSet, INFO, column="listed",
              value_set=[True]),
        check("width_at_least_min", gxe.ExpectColumnValuesToBeBetween, WARNING, column="width",
              min_value=params.min_width, **decoded),
        check("height_at_least_min", gxe.ExpectColumnValuesToBeBetween, WARNING,
              column="height", min_value=params.min_height, **decoded),
    ]  # fmt: skip
    return {"usable_images": images, "breed_counts": counts, "files": files}


# Columns that identify a row in a table's unexpected-row examples.
_INDEX_COLUMNS = {"usable_images": ["image_id"], "breed_counts": ["breed"], "files": ["file"]}


def _gx_context(docs_dir: Path) -> Any:
    """An ephemeral context (in-memory stores) whose one Data Docs site is ``docs_dir``."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
        data_docs_sites={
            "local_site": {
                "class_name": "SiteBuilder",
                "show_how_to_buttons": False,
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": str(docs_dir.resolve()),
                },
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            }
        },
    )
    return gx.get_context(project_config=config, mode="ephemeral")


def run_checkpoints(
    tables: dict[str, pd.DataFrame], params: ValidateParams, docs_dir: Path, rules: LabelRules
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Validate each table through its own checkpoint; returns (check rows, raw GX results)."""
    import great_expectations as gx
    from great_expectations.checkpoint import UpdateDataDocsAction

    context = _gx_context(docs_dir)
    source = context.data_sources.add_pandas("manifest")
    checks: list[dict[str, Any]] = []
    raw: list[dict[str, Any]] = []
    for table, expectations in suites(params, rules).items():
        batch = source.add_dataframe_asset(table).add_batch_definition_whole_dataframe("all_rows")
        suite = context.suites.add(gx.ExpectationSuite(name=f"pets.{table}"))
        for expectation in expectations:
            suite.add_expectation(expectation)
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=f"validate_{table}", data=batch, suite=suite)
        )
        checkpoint = context.checkpoints.add(
            gx.Checkpoint(
                name=f"pets_{table}",
                validation_definitions=[definition],
                actions=[UpdateDataDocsAction(name="update_data_docs")],
                result_format={
                    "result_format": "SUMMARY",
                    "unexpected_index_column_names": _INDEX_COLUMNS[table],
                    "partial_unexpected_count": 20,
                },
            )
        )
        result = checkpoint.run(batch_parameters={"dataframe": tables[table]})
        for suite_result in result.run_results.values():
            as_json = suite_result.to_json_dict()
            raw.append(as_json)
            checks.extend(check_row(table, item) for item in as_json["results"])
    return checks, raw


def check_row(table: str, item: dict[str, Any]) -> dict[str, Any]:
    """One expectation's result, condensed for summary.json."""
    config = item["expectation_config"]
    kwargs = {
        k: v
        for k, v in config["kwargs"].items()
        if k not in ("batch_id", "value_set", "row_condition", "condition_parser") and v is not None
    }
    result = item.get("result") or {}
    ids = _INDEX_COLUMNS[table]
    if "partial_unexpected_index_list" in result:
        examples = [  # identifying columns first: "image_id=X class_id=5 class_id_by_name=0"
            {k: row[k] for k in sorted(row, key=lambda k: k not in ids)}
            for row in result["partial_unexpected_index_list"][:EXAMPLES]
        ]
    elif result.get("partial_missing_list"):
        missing = sorted(map(str, result["partial_missing_list"]))
        examples = [{"missing": value} for value in missing[:EXAMPLES]]
    else:
        examples = []
    row = {
        "name": (config.get("meta") or {}).get("check", config["type"]),
        "table": table,
        "expectation_type": config["type"],
        "kwargs": kwargs,
        "severity": str(config.get("severity") or CRITICAL),
        "success": bool(item["success"]),
        "element_count": result.get("element_count"),
        "unexpected_count": result.get("unexpected_count", result.get("missing_count")),
        "examples": [] if item["success"] else examples,
    }
    if "observed_value" in result:
        row["observed_value"] = result["observed_value"]
    if item.get("exception_info", {}).get("raised_exception"):
        row["exception"] = item["exception_info"]["exception_message"]
    return row
