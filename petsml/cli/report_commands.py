"""``pets report`` and ``pets export``: the strategies compared, a version shipped to ONNX."""

from __future__ import annotations

import argparse
import json

from petsml import paths
from petsml.cli.common import registry


def cmd_report(args: argparse.Namespace) -> None:
    """The compare stage's report of this project (``reports/comparison.json``) as a table."""
    from petsml.evaluation.results import read_comparison, render_text

    report = read_comparison(args.root)
    print(json.dumps(report, indent=2) if args.json else render_text(report))


def cmd_export(args: argparse.Namespace) -> None:
    """Export a registered version to ONNX beside its contract, measured, and log it."""
    from petsml.export.out_dir import check_out_dir

    check_out_dir(args.out)  # in a moment, before the exporter is even imported
    from petsml.export.measure import format_report
    from petsml.tracking.edge_export import export_version

    outcome = export_version(
        registry(args),
        args.version,
        args.out,
        int8=args.int8,
        calibration=args.calibration,
        latency_runs=args.runs,
        threads=args.threads,
        log_run=not args.no_log,
    )
    asked = f" (@{outcome.alias})" if outcome.alias else ""
    print(f"{outcome.model_name} v{outcome.version}{asked} -> {outcome.out_dir}/")
    print(format_report(outcome.report))
    if outcome.run_id:
        print(f"logged as MLflow run {outcome.run_id} (version tag edge.onnx.run_id)")


def register(sub, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("report", help="the strategies compared: quality, latency, size, advice")
    p.add_argument("--root", default=".", help="project folder (default: the current one)")
    p.add_argument("--json", action="store_true", help=f"{paths.COMPARISON_JSON} as is")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser(
        "export", parents=[common], help="export a registered model to ONNX for phones/edge"
    )
    p.add_argument("version", metavar="VERSION_OR_ALIAS", help="e.g. champion or 3")
    p.add_argument("--format", choices=("onnx",), default="onnx", help="only onnx for now")
    p.add_argument("--int8", action="store_true", help="also an int8 static-quantized model")
    p.add_argument("--out", required=True, help="output folder (created; an old export replaced)")
    p.add_argument("--calibration", type=int, default=300, help="int8 calibration train photos")
    p.add_argument("--runs", type=int, default=50, help="timed batch-1 calls per model")
    p.add_argument("--threads", type=int, help="CPU threads for the timings (default: torch's)")
    p.add_argument("--no-log", action="store_true", help="do not log the export to MLflow")
    p.set_defaults(func=cmd_export)
