"""``pets monitor`` and ``pets feedback``: the served model's drift and what users said of it.

``pets monitor`` compares the latest window of the served version's recorded answers with the
reference logged inside that version (params.yaml ``monitor:``), writes
``<monitor.reports>/<window>.json`` + ``.html``, logs them to MLflow against the version and
prints the verdict. ``pets feedback`` stores "prediction X shows class Y", or exports the kept
feedback photos as training photos. docs/MONITORING.md says what is recorded and how drift is
decided.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from petsml.cli.common import model_name, parser_for
from petsml.cli.output import add_json_flag, emit_object, exit_codes

EXIT_DRIFT = 3

MONITOR_EPILOG = (
    "The store, the window size and every threshold are params.yaml's monitor: section "
    '(--params). A window with too few distinct photos for a verdict ("TOO FEW") exits 0.\n\n'
    + exit_codes(
        "error (no alias, no reference in the model, an unreadable store, a bad params value)",
        c3="drift: an alerting detector fired (the verdict line names it)",
    )
)

FEEDBACK_EPILOG = """\
PREDICTION_ID is the "prediction_id" of an answer (`pets predict --record --json`, the web
page, or a served model with monitor.log: true); LABEL is one of that model's classes.
--export FOLDER writes every kept photo with feedback to FOLDER/<label>/<sha256>.<ext>
(kept only with monitor.keep_photos: true): the data.source: folder layout, for training.

""" + exit_codes("error: unknown prediction id, a label the model does not know, recording off")


def _settings(args: argparse.Namespace):
    from petsml.tracking.monitor_config import project_settings

    return project_settings(args.params)


def record_config(args: argparse.Namespace, name: str, holder: Any) -> dict[str, Any]:
    """``pets predict``'s model_config entries: recording off unless ``--record``."""
    from petsml.tracking.monitor_config import loader_config

    record = bool(getattr(args, "record", False))
    identity = {"model_name": name, "model_version": str(holder.version),
                "model_alias": getattr(args, "alias", "")}  # fmt: skip
    return {**identity, **loader_config(record, "predict", args.params)}


def cmd_monitor(args: argparse.Namespace) -> None:
    from petsml.config import load_params
    from petsml.tracking.monitoring_run import monitor_served

    settings = _settings(args)
    experiment = load_params(args.params).mlflow.experiment
    found = monitor_served(model_name(args), args.tracking_uri, args.alias, settings, experiment,
                           last=args.last)  # fmt: skip
    feedback = [row for row in found.feedback if row["model_version"] == found.version]
    lines = [found.line, f"report: {found.files['html']}"]
    for row in feedback:
        share = f"{row['accuracy']:.0%}, 95% {row['low']:.0%}-{row['high']:.0%}"
        lines.append(f"feedback on v{row['model_version']}: {row['correct']}/{row['n']} correct "
                     f"({share})")  # fmt: skip
    emit_object(found.as_dict(), args.json, lambda _: "\n".join(lines))
    if found.drift:
        sys.exit(EXIT_DRIFT)


def cmd_feedback(args: argparse.Namespace) -> None:
    from petsml.errors import PetsError
    from petsml.monitoring.store import open_store

    settings = _settings(args)
    if args.export:
        from petsml.monitoring.export import export_feedback_photos

        with open_store(settings.store, settings) as store:
            summary = export_feedback_photos(store, args.export)
        emit_object(_summary_dict(summary), args.json, lambda _: summary.line())
        return
    if not (args.prediction_id and args.label):
        raise PetsError("give PREDICTION_ID and LABEL (or --export FOLDER); see pets feedback -h")
    from petsml.monitoring.feedback_check import record_feedback

    with open_store(settings.store, settings) as store:
        stored = record_feedback(store, args.prediction_id, args.label, source="cli")
    row = {"prediction_id": stored.prediction_id, "label": stored.label,
           "predicted": stored.predicted, "correct": stored.correct,
           "model": stored.model_name, "model_version": stored.model_version}  # fmt: skip
    verdict = "confirmed" if stored.correct else f"was {stored.predicted}"
    text = f"{stored.prediction_id}: {stored.label} ({verdict}; {stored.model_name} " \
           f"v{stored.model_version})"  # fmt: skip
    emit_object(row, args.json, lambda _: text)


def _summary_dict(summary) -> dict[str, Any]:
    from dataclasses import asdict, is_dataclass

    return asdict(summary) if is_dataclass(summary) else dict(vars(summary))


def register(sub, common: argparse.ArgumentParser) -> None:
    p = parser_for(
        sub, "monitor", parents=[common],
        help="drift of the served model's latest window, logged to MLflow",
        description="Compare the latest window of the alias's recorded answers with the "
        "reference logged inside that version; write and log the report.",
        epilog=MONITOR_EPILOG,
    )  # fmt: skip
    p.add_argument("--alias", default="champion", help="registry alias")
    p.add_argument(
        "--last",
        type=int,
        default=None,
        help="predictions in the window (default: params.yaml monitor.window)",
    )
    add_json_flag(p, "one JSON object: verdict, detectors, report files, run id, accuracy on "
                  "feedback per version")  # fmt: skip
    p.set_defaults(func=cmd_monitor)

    p = parser_for(
        sub, "feedback", parents=[common],
        help="say which class a recorded answer's photo really shows",
        description="Store feedback on a recorded answer, or export kept feedback photos.",
        epilog=FEEDBACK_EPILOG,
    )  # fmt: skip
    p.add_argument("prediction_id", nargs="?", metavar="PREDICTION_ID")
    p.add_argument("label", nargs="?", metavar="LABEL", help="the class the photo shows")
    p.add_argument(
        "--export",
        metavar="FOLDER",
        default=None,
        help="write kept feedback photos to FOLDER/<label>/ (none: no export)",
    )
    add_json_flag(p, "one JSON object: the stored feedback, or the export's summary")
    p.set_defaults(func=cmd_feedback)
