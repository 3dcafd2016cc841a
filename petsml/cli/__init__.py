"""``pets``: the pipeline, the registry, predictions and the servers, from one command.

The model is ``<registry.model_prefix>-<task>`` from params.yaml (``--task`` overrides
``data.task``; ``--model-name`` overrides both). The project is the folder of ``--params``
(default ./params.yaml). The registry is ``--tracking-uri``, else ``MLFLOW_TRACKING_URI``, else
the project's ``sqlite:///mlruns/mlflow.db``.

Each subcommand lives in a module of this package named for what it does and adds itself with
``register(subparsers, common)``; :data:`COMMAND_MODULES` is the one list of them, and
:data:`GROUPS` orders ``pets --help``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from petsml.cli.common import common_options
from petsml.cli.output import INTERRUPTED, JSON_CONVENTION, exit_codes
from petsml.errors import PetsError

# the modules that add subcommands
COMMAND_MODULES = (
    "petsml.cli.pipeline_commands",
    "petsml.cli.status_command",
    "petsml.cli.report_commands",
    "petsml.cli.registry_commands",
    "petsml.cli.predict_commands",
    "petsml.cli.serve_command",
    "petsml.cli.server_commands",
    "petsml.cli.monitor_commands",
)

# how `pets --help` lists the subcommands; any other registered one is listed under "more"
GROUPS = (
    ("pipeline", ("status", "run", "sweep", "report")),
    ("models", ("promote", "rollback", "history", "export")),
    ("predictions", ("predict", "similar")),
    ("servers", ("serve", "web", "ui")),
    ("monitoring", ("monitor", "feedback")),
)

USAGE_LINE = "pets <command> [options]     (pets <command> --help for one command)"


def version() -> str:
    from importlib import metadata

    try:
        return metadata.version("pets-pipeline")
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed: pip install -e .)"


def _command_map(sub: argparse._SubParsersAction) -> str:
    """The subcommands by group, each with its one-line help."""
    helps = {a.dest: a.help or "" for a in sub._choices_actions}
    listed: set[str] = set()
    blocks = []
    groups = [*GROUPS, ("more", tuple(n for n in helps if n not in
                                       {c for _, names in GROUPS for c in names}))]  # fmt: skip
    for title, names in groups:
        present = [n for n in names if n in helps and n not in listed]
        if present:
            listed.update(present)
            lines = [f"  {n:<10} {helps[n]}" for n in present]
            blocks.append(f"{title}:\n" + "\n".join(lines))
    return "\n\n".join(blocks)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pets",
        description="\n".join(
            _wrap(
                "Train, compare, register and serve pet-photo classifiers (DVC + MLflow + "
                "Prefect). The project is the folder of --params (default ./params.yaml); the "
                "registry is --tracking-uri, else MLFLOW_TRACKING_URI, else the project's "
                "sqlite:///mlruns/mlflow.db."
            )
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"pets {version()}")
    sub = parser.add_subparsers(dest="command", metavar="<command>", title="commands")
    parser.usage = USAGE_LINE  # after add_subparsers: the subcommands' usage says `pets <name>`
    common = common_options()
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(sub, common)
    parser.epilog = (
        _command_map(sub) + "\n\n" + "\n".join(_wrap(JSON_CONVENTION)) + "\n\n" + exit_codes()
    )
    sub._choices_actions.clear()  # listed by group in the epilog instead
    sub.help = argparse.SUPPRESS
    return parser


def _wrap(text: str) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width=90)


def main(argv: list[str] | None = None) -> None:
    from petsml.logs import setup_logging

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # bare `pets`: the map of every command
        parser.print_help()
        sys.exit(0)
    setup_logging("WARNING")
    try:
        try:
            args.func(args)
        except PetsError as error:
            print(f"ERROR: {error}", file=sys.stderr)
            sys.exit(1)
        except KeyboardInterrupt:
            print("ERROR: interrupted", file=sys.stderr)
            sys.exit(INTERRUPTED)
        finally:  # a closed pipe shows here at the latest, not in an ignored exit-time flush
            sys.stdout.flush()
    except BrokenPipeError:
        # the reader went away (`pets predict *.jpg | head -1`): pipes are normal use, so this
        # ends quietly; what is still buffered goes nowhere instead of into a traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
