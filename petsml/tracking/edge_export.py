"""``pets export``'s registry side: which version, its model file, and the export logged back.

The export itself (ONNX, contract, int8, parity, latency) is :mod:`petsml.export`, which knows
nothing of MLflow. Here: resolve ``VERSION_OR_ALIAS`` through :class:`ModelRegistry`, download
the version's pyfunc model and take its ``model.pt`` (the artifact
:mod:`petsml.tracking.pyfunc` logs), export it, then log the export folder as a run of its own in
the source run's experiment, tagged with where it came from (registered model name, version,
the alias it was asked by, source run), and tag the version with that run, so the registry knows
which edge artefact belongs to which champion.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from petsml import paths
from petsml.export.measure import CALIBRATION, LATENCY_RUNS, export_and_measure
from petsml.export.out_dir import check_out_dir
from petsml.tracking.errors import RegistryError
from petsml.tracking.model_registry import ModelRegistry
from petsml.tracking.pyfunc import ARTIFACT

log = logging.getLogger(__name__)

ARTIFACT_PATH = "onnx"  # the export folder inside its run
KIND_TAG, KIND = "petsml.kind", "edge_export"
VERSION_TAG_PREFIX = "edge.onnx."
FALLBACK_EXPERIMENT = "edge-exports"  # when the source run is gone


@dataclass(frozen=True)
class ExportOutcome:
    """What ``pets export`` did: the version exported, the alias asked by, report, logged run."""

    model_name: str
    version: str
    alias: str | None
    out_dir: Path
    report: dict[str, Any]
    run_id: str | None


def resolve(registry: ModelRegistry, ref: str) -> tuple[Any, str | None]:
    """``3``/``v3`` -> that version; anything else is an alias -> the version holding it."""
    text = str(ref).strip()
    if text.isdigit() or (text[:1].lower() == "v" and text[1:].isdigit()):
        return registry.version(text), None
    holder = registry.by_alias(text)
    if holder is None:
        known = registry.aliases()
        listed = ", ".join(f"{a} (v{v})" for a, v in sorted(known.items())) or "none"
        raise RegistryError(
            f"{registry.name} has no version or alias {text!r} in the registry at "
            f"{registry.tracking_uri} (aliases: {listed}); give a version number or one of them."
        )
    return holder, text


def fetch_model_file(registry: ModelRegistry, version: Any, dst: str | Path) -> Path:
    """Download ``version``'s logged pyfunc into ``dst``; returns its ``model.pt``."""
    import mlflow
    from mlflow.models import Model

    name = f"{registry.name} version {version.version}"
    try:
        uri = registry.client.get_model_version_download_uri(registry.name, version.version)
        local = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=uri, dst_path=str(dst), tracking_uri=registry.tracking_uri
            )
        )
        artifacts = Model.load(str(local)).flavors["python_function"].get("artifacts") or {}
        model_pt = local / artifacts[ARTIFACT]["path"]
    except (KeyError, TypeError) as error:
        raise RegistryError(
            f"{name} is not a petsml pyfunc model (no artifact {ARTIFACT!r}: {error}); "
            "only models logged by the track stage can be exported."
        ) from None
    except Exception as error:  # missing artifacts: MlflowException or OSError
        raise RegistryError(f"cannot download {name}: {error}") from None
    if not model_pt.is_file():
        raise RegistryError(f"{name}: its model artifact {model_pt} is missing.")
    return model_pt


def _metrics(report: dict[str, Any]) -> dict[str, float]:
    parity = report["parity"]
    found = {
        "fp32_top1_agreement": parity["onnx_fp32"]["top1_agreement"],
        "fp32_max_abs_logit_diff": parity["onnx_fp32"]["max_abs_logit_diff"],
    }
    if "onnx_int8" in parity:
        found["int8_top1_agreement"] = parity["onnx_int8"]["top1_agreement"]
        drop = parity["onnx_int8"]["accuracy_drop_points"]
        if drop is not None:
            found["int8_accuracy_drop_points"] = drop
    for row in report["table"]:
        key = f"{row['model']}_{row['precision']}"
        found[f"{key}_bytes"] = row["bytes"]
        found[f"{key}_p50_ms"] = row["p50_ms"]
        found[f"{key}_p95_ms"] = row["p95_ms"]
        if row["test_accuracy"] is not None:
            found[f"{key}_test_accuracy"] = row["test_accuracy"]
    return {k: float(v) for k, v in found.items()}


def _experiment(registry: ModelRegistry, source_run: str | None) -> str:
    if source_run:
        try:
            return registry.client.get_run(source_run).info.experiment_id
        except Exception as error:  # the run was deleted: log beside the others anyway
            log.warning("source run %s unreadable (%s)", source_run, error)
    from petsml.tracking.store import get_or_create_experiment

    return get_or_create_experiment(FALLBACK_EXPERIMENT, registry.tracking_uri)


def log_export(
    registry: ModelRegistry, version: Any, alias: str | None, out_dir: Path, report: dict
) -> str:
    """Log the export folder as a run with lineage tags; tag the version with it. Run id."""
    number = str(version.version)
    source_run = version.tags.get("run_id") or version.run_id
    lineage = {
        KIND_TAG: KIND,
        "source.model_name": registry.name,
        "source.model_version": number,
        "source.alias": alias or "",
        "source.run_id": source_run or "",
        "source.model_uri": f"models:/{registry.name}/{number}",
        "strategy": version.tags.get("strategy") or report["source"].get("strategy", ""),
        "backbone": version.tags.get("backbone") or report["source"].get("backbone", ""),
        "onnx.opset": report["opset"],
        "onnx.int8": "int8" in report["files"],
    }
    client = registry.client
    run = client.create_run(
        _experiment(registry, source_run),
        run_name=f"onnx-{registry.name}-v{number}",
        tags={k: str(v) for k, v in lineage.items()},
    )
    run_id = run.info.run_id
    try:
        client.log_artifacts(run_id, str(out_dir), ARTIFACT_PATH)
        for key, value in _metrics(report).items():
            client.log_metric(run_id, key, value)
    except Exception:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    int8 = report["parity"].get("onnx_int8") or {}
    registry.set_tags(
        number,
        {
            f"{VERSION_TAG_PREFIX}run_id": run_id,
            f"{VERSION_TAG_PREFIX}artifacts": f"runs:/{run_id}/{ARTIFACT_PATH}",
            f"{VERSION_TAG_PREFIX}exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
            f"{VERSION_TAG_PREFIX}fp32_top1_agreement": report["parity"]["onnx_fp32"][
                "top1_agreement"
            ],
            f"{VERSION_TAG_PREFIX}int8_accuracy_drop_points": int8.get("accuracy_drop_points"),
        },
    )
    log.info("logged the export of %s v%s as run %s", registry.name, number, run_id)
    return run_id


def export_version(
    registry: ModelRegistry,
    ref: str,
    out_dir: str | Path,
    *,
    int8: bool = False,
    decoded_dir: str | Path = paths.DECODED,
    splits_dir: str | Path = paths.SPLITS,
    calibration: int = CALIBRATION,
    latency_runs: int = LATENCY_RUNS,
    threads: int | None = None,
    log_run: bool = True,
) -> ExportOutcome:
    """``pets export REF``: resolve, download, export and measure, log. Bad input fails before
    anything is written (the folder appears whole or not at all)."""
    out_dir = check_out_dir(out_dir)
    version, alias = resolve(registry, ref)
    number = str(version.version)
    source = {
        "model_name": registry.name,
        "model_version": number,
        "alias": alias,
        "run_id": version.tags.get("run_id") or version.run_id,
        "model_uri": f"models:/{registry.name}/{number}",
        "model_file": f"{ARTIFACT}.pt of models:/{registry.name}/{number}",
    }
    with tempfile.TemporaryDirectory(prefix="petsml-export-") as tmp:
        model_pt = fetch_model_file(registry, version, tmp)
        report = export_and_measure(
            model_pt,
            out_dir,
            int8=int8,
            decoded_dir=decoded_dir,
            splits_dir=splits_dir,
            calibration=calibration,
            latency_runs=latency_runs,
            threads=threads,
            source=source,
        )
    run_id = log_export(registry, version, alias, out_dir, report) if log_run else None
    return ExportOutcome(registry.name, number, alias, out_dir, report, run_id)
