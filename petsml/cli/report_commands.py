"""``pets report`` (alias ``compare``) and ``pets export``: the strategies compared, a version
shipped to ONNX."""

from __future__ import annotations

import argparse

from petsml import paths
from petsml.cli.common import (
    parser_for,
    project_options,
    project_root,
    registry,
    setting,
    shipped_setting,
)
from petsml.cli.output import add_json_flag, emit_object, exit_codes


def cmd_report(args: argparse.Namespace) -> None:
    """The compare stage's report of this project (``reports/comparison.json``) as a table."""
    from petsml.evaluation.results import read_comparison, render_text

    report = read_comparison(project_root(args))
    emit_object(report, args.json, render_text)


def cmd_export(args: argparse.Namespace) -> None:
    """Export a registered version to ONNX beside its contract, measured, and log it."""
    from petsml.export.out_dir import check_out_dir

    check_out_dir(args.out)  # in a moment, before the exporter is even imported
    from petsml.export.measure import format_report
    from petsml.tracking.edge_export import export_version

    calibration = args.calibration or setting(args, "compare.calibration")
    runs = args.runs or setting(args, "compare.latency_runs")
    outcome = export_version(
        registry(args),
        args.version,
        args.out,
        int8=args.int8,
        calibration=calibration,
        latency_runs=runs,
        threads=args.threads,
        log_run=not args.no_log,
    )
    result = {"model": outcome.model_name, "version": outcome.version, "alias": outcome.alias,
              "out_dir": str(outcome.out_dir), "run_id": outcome.run_id,
              "report": outcome.report}  # fmt: skip

    def text(obj) -> str:
        asked = f" (@{obj['alias']})" if obj["alias"] else ""
        lines = [f"{obj['model']} v{obj['version']}{asked} -> {obj['out_dir']}/",
                 format_report(obj["report"])]  # fmt: skip
        if obj["run_id"]:
            lines.append(f"logged as MLflow run {obj['run_id']} (version tag edge.onnx.run_id)")
        return "\n".join(lines)

    emit_object(result, args.json, text)


def _from_params(key: str) -> str:
    shipped = shipped_setting(key)
    here = "" if shipped is None else f" = {shipped} here"
    return f"(default: {key} in the params file{here})"


def register(sub, common: argparse.ArgumentParser) -> None:
    p = parser_for(
        sub, "report", parents=[project_options()], aliases=["compare"],
        help="the strategies compared: quality, latency, size, advice (alias: compare)",
        description=f"The compare stage's report ({paths.COMPARISON_JSON}) as a table: every "
        "strategy's quality, latency and size, the Pareto front and the advice. `pets compare` "
        "is the same command (the stage is named compare).",
        epilog=exit_codes(f"no {paths.COMPARISON_JSON} yet (run `pets run`)"),
    )  # fmt: skip
    add_json_flag(p, f"one object: {paths.COMPARISON_JSON} as is")
    p.set_defaults(func=cmd_report)

    p = parser_for(
        sub, "export", parents=[common], help="export a registered model to ONNX for phones/edge",
        description="Export a registered version to ONNX (and int8), check it against PyTorch, "
        "time it and log the export to MLflow.",
        epilog="example:\n  pets export champion --int8 --out exports/champion\n\n"
        + exit_codes("the version cannot be exported, or the output folder is unusable"),
    )  # fmt: skip
    p.add_argument("version", metavar="VERSION_OR_ALIAS", help="e.g. champion or 3")
    p.add_argument("--format", choices=("onnx",), default="onnx", help="only onnx for now")
    p.add_argument("--int8", action="store_true", help="also an int8 static-quantized model")
    p.add_argument("--out", required=True, help="output folder (created; an old export replaced)")
    p.add_argument(
        "--calibration",
        type=int,
        help="int8 calibration train photos " + _from_params("compare.calibration"),
    )
    p.add_argument(
        "--runs",
        type=int,
        help="timed batch-1 calls per model " + _from_params("compare.latency_runs"),
    )
    p.add_argument("--threads", type=int, help="CPU threads for the timings (default: torch's)")
    p.add_argument("--no-log", action="store_true", help="do not log the export to MLflow")
    add_json_flag(p, "one object: model, version, alias, out_dir, run_id, report")
    p.set_defaults(func=cmd_export)
