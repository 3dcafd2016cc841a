"""``pets``: the registry, the served model and the reports from the command line.

    pets promote 3 --reason "hand-checked on new photos"   # champion -> v3 (no gate), recorded
    pets rollback [--reason ...]                           # champion -> the one v3 replaced
    pets history [--json]                                  # every alias move, oldest first
    pets predict photo.jpg [more.jpg ...] [--alias champion] [--json]
    pets ui [--port 5000]                                  # MLflow UI, on the strategies view
    pets report [--json]                                   # the strategies compared (compare stage)
    pets export champion --format onnx [--int8] --out DIR  # ONNX (+ int8) for phones, measured
    pets similar photo.jpg [more.jpg ...] [-k 8] [--alias champion] [--json]
    pets web [--port 8000]                                 # the web page: predict + similar
    pets monitor [--json]                                  # drift of the served model's answers
    pets feedback PREDICTION_ID LABEL | --export FOLDER    # "it is LABEL"; photos to train on

The model is ``<registry.model_prefix>-<task>`` from params.yaml (``--task`` overrides
``data.task``; ``--model-name`` overrides both). The registry is ``MLFLOW_TRACKING_URI``, else
the project's ``sqlite:///mlruns/mlflow.db``.

Each subcommand lives in a module of this package named for what it does and adds itself with
``register(subparsers, common)``; :data:`COMMAND_MODULES` is the one list of them.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from petsml.cli.common import common_options
from petsml.errors import PetsError

# the modules that add subcommands, in the order `pets --help` lists them
COMMAND_MODULES = (
    "petsml.cli.registry_commands",
    "petsml.cli.predict_commands",
    "petsml.cli.server_commands",
    "petsml.cli.report_commands",
    "petsml.cli.monitor_commands",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pets", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    common = common_options()
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(sub, common)
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
