"""Ship to phones and edge boxes: size, batch-1 latency and accuracy of every trained model as
PyTorch fp32, ONNX fp32 and ONNX int8 (ONNX Runtime, CPU), with the ratios against PyTorch.

Measures the model folders of a project the pipeline has run in (``models/<strategy>/``, the
decoded cache and the splits), one export per strategy through
:func:`petsml.export.measure.export_and_measure` (the code ``pets export`` runs), grouped by the
backbone each used. ``--sample FOLDER`` first runs the pipeline (``dvc repro``, default
strategies) on a folder of real photos in a throw-away copy of this repo, as
``benchmarks/strategies.py`` does. Prints the CPU, its SIMD flags, threads, load, versions and
the precision of every line.

    python -m benchmarks.edge [PROJECT] [--runs 50] [--threads N] [--no-int8]
    python -m benchmarks.edge --sample ../shared/pets-sample [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from petsml import paths  # noqa: E402
from petsml.export.measure import export_and_measure, format_report  # noqa: E402


def run_sample_pipeline(folder: Path, work: Path) -> Path:
    """The pipeline on real photos in a copy of this repo under ``work``; returns the project."""
    from benchmarks.sample_project import repro, sample_project

    project, env = sample_project(folder, work)
    seconds = repro(project, env)
    print(f"pipeline (dvc repro) on {folder}: {seconds:.0f} s", flush=True)
    return project


def measure(project: Path, args: argparse.Namespace, out_root: Path) -> list[dict]:
    folders = sorted(p.parent for p in (project / paths.MODELS).glob("*/model.pt"))
    if args.strategies:
        folders = [f for f in folders if f.name in args.strategies]
    if not folders:
        sys.exit(f"no model folders under {project / paths.MODELS}: run the pipeline first")
    reports = []
    for folder in folders:
        report = export_and_measure(
            folder,
            out_root / folder.name,
            int8=not args.no_int8,
            decoded_dir=project / paths.DECODED,
            splits_dir=project / paths.SPLITS,
            calibration=args.calibration,
            latency_runs=args.runs,
            threads=args.threads,
        )
        source = report["source"]
        print(f"\n== {source.get('strategy')} (backbone {source.get('backbone')})")
        print(format_report(report))
        reports.append(report)
    return reports


def summary(reports: list[dict]) -> None:
    """One markdown table, rows per backbone/strategy/precision, ratios against PyTorch fp32."""
    import onnxruntime
    import torch

    first = reports[0]["machine"]
    print(
        f"\nCPU {first['cpu']} [{' '.join(first['flags'])}], {first['cores']} cores, "
        f"{first['threads']} threads, torch {torch.__version__}, onnxruntime "
        f"{onnxruntime.__version__}, load {list(os.getloadavg())}"
    )
    print(
        "| backbone | strategy | model | precision | size MB | p50 ms | p95 ms | test acc | "
        "size vs PyTorch | p50 speed-up |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for report in reports:
        rows = report["table"]
        base = rows[0]
        for row in rows:
            acc = "-" if row["test_accuracy"] is None else f"{row['test_accuracy']:.3f}"
            print(
                f"| {report['source'].get('backbone')} | {report['source'].get('strategy')} "
                f"| {row['model']} | {row['precision']} | {row['bytes'] / 1e6:.2f} "
                f"| {row['p50_ms']:.2f} | {row['p95_ms']:.2f} | {acc} "
                f"| {row['bytes'] / base['bytes']:.2f}x | {base['p50_ms'] / row['p50_ms']:.2f}x |"
            )
    for report in reports:
        parity = report["parity"]
        int8 = parity.get("onnx_int8") or {}
        print(
            f"{report['source'].get('strategy')}: fp32 agreement "
            f"{parity['onnx_fp32']['top1_agreement']:.4f}, max |logit diff| "
            f"{parity['onnx_fp32']['max_abs_logit_diff']:.2e}"
            + (
                f"; int8 agreement {int8['top1_agreement']:.4f}, accuracy drop "
                f"{int8['accuracy_drop_points']:+.2f} points"
                if int8
                else ""
            )
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("project", nargs="?", default=".", help="a project the pipeline ran in")
    parser.add_argument("--sample", help="run the pipeline on this folder of real photos first")
    parser.add_argument("--keep", help="with --sample: build the project here and keep it")
    parser.add_argument("-s", "--strategy", action="append", dest="strategies")
    parser.add_argument("--runs", type=int, default=50, help="timed batch-1 calls per model")
    parser.add_argument("--threads", type=int, help="threads of both runtimes (default: torch's)")
    parser.add_argument("--calibration", type=int, default=300)
    parser.add_argument("--no-int8", action="store_true")
    parser.add_argument("--json", help="also write every report to this file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="edge-bench-") as tmp:
        work = Path(args.keep) if args.keep else Path(tmp)
        if args.sample:
            work.mkdir(parents=True, exist_ok=True)
            project = run_sample_pipeline(Path(args.sample).resolve(), work)
        else:
            project = Path(args.project).resolve()
        reports = measure(project, args, Path(tmp) / "exports")
        summary(reports)
        if args.json:
            Path(args.json).write_text(json.dumps(reports, indent=2))


if __name__ == "__main__":
    main()
