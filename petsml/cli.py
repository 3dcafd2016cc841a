"""``pets``: the registry and the served model from the command line.

    pets promote 3 --reason "hand-checked on new photos"   # champion -> v3 (no gate), recorded
    pets rollback [--reason ...]                           # champion -> the one v3 replaced
    pets history [--json]                                  # every alias move, oldest first
    pets predict photo.jpg [more.jpg ...] [--alias champion] [--json]
    pets ui [--port 5000]                                  # MLflow UI, on the strategies view
    pets report [--json]                                   # the strategies compared (compare stage)
    pets export champion --format onnx [--int8] --out DIR  # ONNX (+ int8) for phones, measured
    pets similar photo.jpg [more.jpg ...] [-k 8] [--alias champion] [--json]
    pets web [--port 8000]                                 # the web page: predict + similar

The model is ``<registry.model_prefix>-<task>`` from params.yaml (``--task`` overrides
``data.task``; ``--model-name`` overrides both). The registry is ``MLFLOW_TRACKING_URI``, else
the project's ``sqlite:///mlruns/mlflow.db``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from petsml import paths
from petsml.errors import PetsError

log = logging.getLogger("petsml.cli")


PREDICT_EPILOG = """\
Every file gets an answer, in the order given: a missing, unreadable, too large or non-image
file is reported on its own line (text: "FILE: ERROR ..."; --json: "error" set and label,
species, probability, top5 null) and the other files are still classified.

exit status (the same with and without --json):
  0  every file classified
  1  at least one file not classified (a summary goes to stderr), or no model to load
"""


def _model_name(args: argparse.Namespace) -> str:
    if args.model_name:
        return args.model_name
    from petsml.config import DEFAULT_PARAMS, load_params

    params_path = Path(args.params)
    if not params_path.exists() and params_path == DEFAULT_PARAMS:  # e.g. on a serving host
        raise PetsError(
            f"no {DEFAULT_PARAMS} here to name the registered model: pass --model-name (e.g. "
            "oxford-pets-breed), or run from the project root or with --params"
        )
    params = load_params(params_path)
    if not args.task:  # <prefix>-<task>, or <prefix>-<dataset name> for an image folder
        return params.registered_model_name
    return f"{params.registry.model_prefix}-{args.task}"


def _registry(args: argparse.Namespace):
    from petsml.tracking.model_registry import ModelRegistry

    return ModelRegistry(_model_name(args), args.tracking_uri)


def cmd_promote(args: argparse.Namespace) -> None:
    registry = _registry(args)
    event = registry.promote(args.version, args.reason)
    previous = f"v{event.previous}" if event.previous else "none"
    print(f"{registry.name}@champion -> v{event.version} (was {previous}): {event.reason}")


def cmd_rollback(args: argparse.Namespace) -> None:
    registry = _registry(args)
    event = registry.rollback(args.reason)
    print(f"{registry.name}@champion -> v{event.version} (was v{event.previous}): {event.reason}")


def cmd_history(args: argparse.Namespace) -> None:
    registry = _registry(args)
    events = registry.history()
    if args.json:
        print(json.dumps([e.as_dict() for e in events], indent=2))
        return
    for version in registry.unfinished():  # a register stage killed half-way
        print(f"NOTE: {registry.unfinished_note(version)}")
    if not events:
        print(f"{registry.name}: no alias moves recorded in {registry.tracking_uri}")
        return
    aliases = registry.aliases()
    print(f"{registry.name}: " + ", ".join(f"@{a} = v{v}" for a, v in sorted(aliases.items())))
    for e in events:
        was = f"v{e.previous}" if e.previous else "-"
        print(f"{e.time}  @{e.alias:<10} v{e.version:<4} was {was:<5} {e.action:<8} {e.reason}")


def _failed_row(file: str, error: str) -> dict:
    return {"file": file, "label": None, "species": None, "probability": None, "top5": None,
            "error": error}  # fmt: skip


def _model_rows(model, files: list[str]) -> list[dict]:
    """The model's answer per file (paths opted in: this is the local CLI, not a server)."""
    import pandas as pd

    frame = pd.DataFrame({"image": [str(Path(f).resolve()) for f in files]})
    out = model.predict(frame)
    rows = []
    for file, (_, row) in zip(files, out.iterrows(), strict=True):
        if row.get("error"):
            rows.append(_failed_row(file, str(row["error"])))
            continue
        top5 = row.get("top5")
        rows.append(
            {
                "file": file,
                "label": row.get("label"),
                "species": row.get("species"),
                "probability": float(row["probability"]),
                "top5": json.loads(top5) if isinstance(top5, str) and top5 else top5,
                "error": None,
            }
        )
    return rows


def _file_problem(file: str) -> str | None:
    path = Path(file)
    if not path.exists():
        return f"no such file: {file}"
    if not path.is_file():
        return f"not a file: {file}"
    return None


def cmd_predict(args: argparse.Namespace) -> None:
    registry = _registry(args)
    holder = registry.by_alias(args.alias)
    if holder is None:
        raise PetsError(
            f"{registry.name} has no '{args.alias}' alias in {registry.tracking_uri}: run the "
            "pipeline (`dvc repro register`) or `pets promote <version> --reason ...`."
        )
    problems = {f: _file_problem(f) for f in args.files}
    readable = [f for f in args.files if problems[f] is None]
    uri = f"models:/{registry.name}@{args.alias}"
    answers: dict[str, dict] = {}
    if readable:
        import mlflow.pyfunc

        mlflow.set_tracking_uri(registry.tracking_uri)
        mlflow.set_registry_uri(registry.tracking_uri)
        model = mlflow.pyfunc.load_model(uri, model_config={"allow_paths": True})
        answers = {row["file"]: row for row in _model_rows(model, readable)}
    # one answer per file, in the order given; a missing file does not cancel the others
    rows = [answers.get(f) or _failed_row(f, problems[f] or "no answer") for f in args.files]
    _print_rows(rows, uri, holder.version, args.json)
    failed = sum(1 for row in rows if row["error"])
    if failed:
        print(f"ERROR: {failed} of {len(rows)} file(s) not classified", file=sys.stderr)
        sys.exit(1)


def _print_rows(rows: list[dict], uri: str, version: str, as_json: bool) -> None:
    if as_json:
        for row in rows:
            print(json.dumps(row, default=str))
        return
    print(f"{uri} (version {version})")
    for row in rows:
        if row["error"]:
            print(f"{row['file']}: ERROR {row['error']}")
            continue
        species = f" ({row['species']})" if row["species"] else ""  # none: a folder's class
        print(f"{row['file']}: {row['label']}{species} p={row['probability']:.3f}")
        for item in row["top5"] or []:  # the pyfunc's ranked {"label", "probability"} list
            print(f"    {item['label']:<28} {item['probability']:.3f}")


def cmd_ui(args: argparse.Namespace) -> None:
    """Serve the MLflow UI on loopback and print the link to the last run's strategies.

    MLflow 3.17 opens an experiment on its GenAI overview whatever the experiment's kind tag
    says; the track stage's shared view (``ui_path`` in reports/mlflow_runs.json) opens on the
    strategies compared side by side, so that link is the first thing to show a user.
    """
    from petsml import paths
    from petsml.io import read_json
    from petsml.tracking import store
    from petsml.web.supervise import check_port_free, run_server

    uri = args.tracking_uri or store.tracking_uri()
    db = store.sqlite_path(uri)
    if db is not None and not db.exists():
        raise PetsError(f"{db}: no MLflow store yet. Run `dvc repro` (or `make run`) first.")
    check_port_free("127.0.0.1", args.port)  # before a link to whatever holds the port
    base = f"http://127.0.0.1:{args.port}"
    record = read_json(paths.MLFLOW_RUNS) if paths.MLFLOW_RUNS.is_file() else {}
    link = base + record["ui_path"] if record.get("ui_path") else base
    command = [sys.executable, "-m", "mlflow", "ui", "--host", "127.0.0.1", "--port",
               str(args.port), "--backend-store-uri", uri]  # fmt: skip
    if db is not None:
        command += ["--default-artifact-root", store.artifact_root(uri)]
    print(f"MLflow UI: {link}", flush=True)
    if not record.get("ui_path"):
        print(f"(no {paths.MLFLOW_RUNS} yet: run `dvc repro` for the strategies view)", flush=True)
    # `mlflow ui` starts uvicorn and job workers (some in sessions of their own): every signal
    # that ends this command ends all of them (petsml/web/supervise.py)
    sys.exit(run_server(command))


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
        _registry(args),
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


def cmd_similar(args: argparse.Namespace) -> None:
    """The nearest training/validation photos of each file under the alias's own index."""
    from petsml import paths
    from petsml.tracking.alias_model import load_alias_model
    from petsml.tracking.pyfunc import MAX_NEIGHBOURS

    if not 1 <= args.k <= MAX_NEIGHBOURS:
        raise PetsError(f"-k must be between 1 and {MAX_NEIGHBOURS}, got {args.k}")
    problems = {f: _file_problem(f) for f in args.files}
    loaded = load_alias_model(
        _registry(args), args.alias, {"allow_paths": True, "neighbours": args.k}
    )
    readable = [f for f in args.files if problems[f] is None]
    answers: dict[str, dict] = {}
    if readable:
        import pandas as pd

        out = loaded.model.predict(
            pd.DataFrame({"image": [str(Path(f).resolve()) for f in readable]})
        )
        for file, (_, row) in zip(readable, out.iterrows(), strict=True):
            near = json.loads(row["neighbours"]) if row.get("neighbours") else []
            for item in near:
                item["path"] = str(paths.RAW / item["file"])
            answers[file] = {"file": file, "label": row.get("label"), "error": row.get("error")
                             or None, "neighbours": near}  # fmt: skip
    rows = [answers.get(f) or {"file": f, "label": None, "error": problems[f], "neighbours": []}
            for f in args.files]  # fmt: skip
    if args.json:
        for row in rows:
            print(json.dumps(row))
    else:
        print(f"{loaded.uri} (version {loaded.version}): {args.k} nearest train/val photos")
        for row in rows:
            if row["error"]:
                print(f"{row['file']}: ERROR {row['error']}")
                continue
            print(f"{row['file']}: predicted {row['label']}")
            for rank, item in enumerate(row["neighbours"], 1):
                print(f"  {rank:>2}. {item['breed']:<28} {item['distance']:.4f}  {item['path']}")
    failed = sum(1 for row in rows if row["error"])
    if failed:
        print(f"ERROR: {failed} of {len(rows)} file(s) not searched", file=sys.stderr)
        sys.exit(1)


def cmd_web(args: argparse.Namespace) -> None:
    """Serve the web page (predict + similar photos + registry view) on loopback."""
    from petsml.web.server import serve

    serve(_model_name(args), args.tracking_uri, alias=args.alias, host="127.0.0.1",
          port=args.port, params_path=args.params)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pets", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--task", choices=("breed", "species"), help="overrides data.task")
    common.add_argument("--model-name", help="registered model name (default <prefix>-<task>)")
    common.add_argument("--params", default="params.yaml", help="params file (default %(default)s)")
    common.add_argument(
        "--tracking-uri", help="MLflow tracking/registry URI (default MLFLOW_TRACKING_URI)"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("promote", parents=[common], help="make a version the champion (no gate)")
    p.add_argument("version", help="model version number, e.g. 3")
    p.add_argument("--reason", required=True, help="why (recorded on the version)")
    p.set_defaults(func=cmd_promote)

    p = sub.add_parser("rollback", parents=[common], help="champion back to the previous one")
    p.add_argument("--reason", help="why (recorded); default 'rollback from version N'")
    p.set_defaults(func=cmd_rollback)

    p = sub.add_parser("history", parents=[common], help="list every alias move")
    p.add_argument("--json", action="store_true", help="JSON instead of a table")
    p.set_defaults(func=cmd_history)

    p = sub.add_parser(
        "predict",
        parents=[common],
        help="classify image files",
        description="Classify image files with the registry's champion (or --alias).",
        epilog=PREDICT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="image files (JPEG, PNG, ...)")
    p.add_argument("--alias", default="champion", help="registry alias (default %(default)s)")
    p.add_argument("--json", action="store_true", help="one JSON object per file")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("ui", parents=[common], help="MLflow UI, opened on the strategies view")
    p.add_argument("--port", type=int, default=5000, help="loopback port (default %(default)s)")
    p.set_defaults(func=cmd_ui)

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
    p = sub.add_parser(
        "similar",
        parents=[common],
        help="nearest training photos of image files",
        description="The most similar train/validation photos (cosine distance of the alias's "
        "own backbone embeddings; the index ships inside the registered model).",
    )
    p.add_argument("files", nargs="+", metavar="PHOTO", help="image files (JPEG, PNG, ...)")
    p.add_argument("-k", type=int, default=8, help="photos per file (default %(default)s)")
    p.add_argument("--alias", default="champion", help="registry alias (default %(default)s)")
    p.add_argument("--json", action="store_true", help="one JSON object per file")
    p.set_defaults(func=cmd_similar)

    p = sub.add_parser("web", parents=[common], help="web page: predict and similar photos")
    p.add_argument("--port", type=int, default=8000, help="loopback port (default %(default)s)")
    p.add_argument("--alias", default="champion", help="registry alias (default %(default)s)")
    p.set_defaults(func=cmd_web)
    return parser


def main(argv: list[str] | None = None) -> None:
    from petsml.logs import setup_logging

    args = build_parser().parse_args(argv)
    setup_logging("WARNING")
    try:
        try:
            args.func(args)
        except PetsError as error:
            print(f"ERROR: {error}", file=sys.stderr)
            sys.exit(1)
        finally:  # a closed pipe shows here at the latest, not in an ignored exit-time flush
            sys.stdout.flush()
    except BrokenPipeError:
        # the reader went away (`pets predict *.jpg | head -1`): pipes are normal use, so this
        # ends quietly; what is still buffered goes nowhere instead of into a traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)


if __name__ == "__main__":
    main()
