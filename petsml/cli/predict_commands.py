"""``pets predict`` and ``pets similar``: a registered model's answers for files on disk.

Every file gets an answer in the order given; a file that cannot be read gets an error row and
the others are still answered (paths are opted in: this is the local CLI, never a server).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from petsml import paths
from petsml.cli.common import aliased_version, file_problem, parser_for, project_root, registry
from petsml.cli.output import add_json_flag, emit_rows, exit_codes
from petsml.errors import PetsError

PREDICT_EPILOG = """\
Every file gets an answer, in the order given: a missing, unreadable, too large or non-image
file is reported on its own line (text: "FILE: ERROR ..."; --json: "error" set and label,
species, probability, top5 null) and the other files are still classified.

"""


def _failed_row(file: str, error: str) -> dict:
    return {"file": file, "label": None, "species": None, "probability": None, "top5": None,
            "error": error}  # fmt: skip


def _model_rows(model, files: list[str]) -> list[dict]:
    """The model's answer per file."""
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
                **({"prediction_id": row["prediction_id"]} if row.get("prediction_id") else {}),
            }
        )
    return rows


def cmd_predict(args: argparse.Namespace) -> None:
    reg, holder = aliased_version(args)
    problems = {f: file_problem(f) for f in args.files}
    readable = [f for f in args.files if problems[f] is None]
    uri = f"models:/{reg.name}@{args.alias}"
    answers: dict[str, dict] = {}
    if readable:
        import mlflow.pyfunc

        from petsml.cli.monitor_commands import record_config  # --record: monitor.log applies
        from petsml.tracking.model_registry import global_uri

        with global_uri(reg.tracking_uri):  # the registry's store, restored after: no MLFLOW_*
            model = mlflow.pyfunc.load_model(  # left behind for a caller's later work
                uri, model_config={"allow_paths": True, **record_config(args, reg.name, holder)}
            )
        answers = {row["file"]: row for row in _model_rows(model, readable)}
    # one answer per file, in the order given; a missing file does not cancel the others
    rows = [answers.get(f) or _failed_row(f, problems[f] or "no answer") for f in args.files]
    emit_rows(rows, args.json, _predict_text(uri, holder.version))
    failed = sum(1 for row in rows if row["error"])
    if failed:
        print(f"ERROR: {failed} of {len(rows)} file(s) not classified", file=sys.stderr)
        sys.exit(1)


def _predict_text(uri: str, version: str):
    first = [f"{uri} (version {version})"]

    def text(row) -> str:
        lines, first[:] = first[:], []  # the model line once, above the first file
        if row["error"]:
            return "\n".join([*lines, f"{row['file']}: ERROR {row['error']}"])
        species = f" ({row['species']})" if row["species"] else ""  # none: a folder's class
        lines.append(f"{row['file']}: {row['label']}{species} p={row['probability']:.3f}")
        if row.get("prediction_id"):  # --record: what `pets feedback` names
            lines.append(f"    prediction_id {row['prediction_id']}")
        for item in row["top5"] or []:  # the pyfunc's ranked {"label", "probability"} list
            lines.append(f"    {item['label']:<28} {item['probability']:.3f}")
        return "\n".join(lines)

    return text


def _photo_locator(args: argparse.Namespace):
    """file of the index -> the path to show: the photo in its data source's folder (the
    project's params name the source), relative to the current folder when inside it."""
    params_file = Path(args.params)
    if not params_file.is_file():  # no project here (e.g. --model-name on a serving host)
        return lambda file: str(paths.RAW / file)
    from petsml.config import load_params
    from petsml.data.sources import photo_path

    data, root, here = load_params(params_file).data, project_root(args), Path.cwd().resolve()

    def locate(file: str) -> str:
        found = photo_path(data, file, root)
        if found is None:
            return f"(outside data.folder: {file})"
        return str(found.relative_to(here) if found.is_relative_to(here) else found)

    return locate


def cmd_similar(args: argparse.Namespace) -> None:
    """The nearest training/validation photos of each file under the alias's own index."""
    from petsml.tracking.alias_model import load_alias_model
    from petsml.tracking.pyfunc import MAX_NEIGHBOURS

    if not 1 <= args.k <= MAX_NEIGHBOURS:
        raise PetsError(f"-k must be between 1 and {MAX_NEIGHBOURS}, got {args.k}")
    problems = {f: file_problem(f) for f in args.files}
    locate = _photo_locator(args)
    loaded = load_alias_model(
        registry(args), args.alias, {"allow_paths": True, "neighbours": args.k}
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
                item["path"] = locate(item["file"])
            answers[file] = {"file": file, "label": row.get("label"), "error": row.get("error")
                             or None, "neighbours": near}  # fmt: skip
    rows = [answers.get(f) or {"file": f, "label": None, "error": problems[f], "neighbours": []}
            for f in args.files]  # fmt: skip
    if not args.json:
        print(f"{loaded.uri} (version {loaded.version}): {args.k} nearest train/val photos")
    emit_rows(rows, args.json, _similar_text)
    failed = sum(1 for row in rows if row["error"])
    if failed:
        print(f"ERROR: {failed} of {len(rows)} file(s) not searched", file=sys.stderr)
        sys.exit(1)


def _similar_text(row) -> str:
    if row["error"]:
        return f"{row['file']}: ERROR {row['error']}"
    lines = [f"{row['file']}: predicted {row['label']}"]
    for rank, item in enumerate(row["neighbours"], 1):
        lines.append(f"  {rank:>2}. {item['breed']:<28} {item['distance']:.4f}  {item['path']}")
    return "\n".join(lines)


def register(sub, common: argparse.ArgumentParser) -> None:
    p = parser_for(
        sub, "predict", parents=[common], help="classify image files",
        description="Classify image files with the registry's champion (or --alias).",
        epilog=PREDICT_EPILOG + "\n" + exit_codes(
            "at least one file not classified (a summary goes to stderr), or no model to load"),
    )  # fmt: skip
    p.add_argument("files", nargs="+", metavar="FILE", help="image files (JPEG, PNG, ...)")
    p.add_argument("--alias", default="champion", help="registry alias")
    add_json_flag(p, "JSON Lines, one object per file: file, label, species, probability, "
                  "top5, error (and prediction_id with --record)")  # fmt: skip
    p.add_argument("--record", action="store_true",
                   help="record the answers for monitoring (params.yaml monitor:; each row gets a "
                        "prediction_id for `pets feedback`)")  # fmt: skip
    p.set_defaults(func=cmd_predict)

    p = parser_for(
        sub, "similar", parents=[common], help="nearest training photos of image files",
        description="The most similar train/validation photos (cosine distance of the alias's "
        "own backbone embeddings; the index ships inside the registered model). Each photo's "
        "path is where the project's data source keeps it (data.folder for your own photos).",
        epilog=exit_codes("at least one file not searched, or no model to load"),
    )  # fmt: skip
    p.add_argument("files", nargs="+", metavar="PHOTO", help="image files (JPEG, PNG, ...)")
    p.add_argument("-k", type=int, default=8, help="photos per file")
    p.add_argument("--alias", default="champion", help="registry alias")
    add_json_flag(p, "JSON Lines, one object per file: file, label, error, neighbours "
                  "(image_id, file, breed, distance, path)")  # fmt: skip
    p.set_defaults(func=cmd_similar)
