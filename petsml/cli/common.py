"""What every ``pets`` subcommand shares: naming the project, the registered model, files."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from petsml.errors import PetsError

PARAMS_HELP = "the project's params file; the project is its folder (default: %(default)s)"


def project_options() -> argparse.ArgumentParser:
    """``--params``: the one way every command names the project (a parent parser)."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--params", default="params.yaml", help=PARAMS_HELP)
    return parent


def common_options() -> argparse.ArgumentParser:
    """The options of every command that talks to the registry (a parent parser)."""
    common = argparse.ArgumentParser(add_help=False, parents=[project_options()])
    common.add_argument("--task", choices=("breed", "species"), help="overrides data.task")
    common.add_argument(
        "--model-name",
        help="registered model name (default: <registry.model_prefix>-<task>; for an image "
        "folder <registry.model_prefix>-<data.name, else the folder's name>)",
    )
    add_tracking_uri(common)
    return common


def add_tracking_uri(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tracking-uri",
        help="MLflow tracking/registry URI (default: MLFLOW_TRACKING_URI, else the project's "
        "sqlite:///mlruns/mlflow.db)",
    )


def absolute_sqlite(uri: str | None) -> str | None:
    """A relative ``sqlite:///`` URI the user typed, pinned before the project becomes the cwd."""
    from petsml.tracking import store

    db = store.sqlite_path(uri) if uri else None
    return uri if db is None or db.is_absolute() else f"sqlite:///{db.resolve().as_posix()}"


def project_root(args: argparse.Namespace) -> Path:
    """The project folder: the folder of ``--params``."""
    return Path(args.params).resolve().parent


def shipped_setting(dotted: str, params_file: str | Path = "params.yaml") -> Any:
    """``section.key`` of the params file in the current folder, for a help text's default
    (None outside a project: the command then reads it from ``--params`` when it runs)."""
    import yaml

    path = Path(params_file)
    if not path.is_file():
        return None
    try:
        value: Any = yaml.safe_load(path.read_text())
        for key in dotted.split("."):
            value = value[key]
    except (yaml.YAMLError, KeyError, TypeError):
        return None
    return value


def setting(args: argparse.Namespace, dotted: str) -> Any:
    """``section.key`` of the validated params (``--params``): an option's default."""
    from petsml.config import load_params

    value: Any = load_params(Path(args.params))
    for key in dotted.split("."):
        value = getattr(value, key)
    return value


def model_name(args: argparse.Namespace) -> str:
    """``--model-name``, else ``<registry.model_prefix>-<task>`` from the params file."""
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


def registry(args: argparse.Namespace):
    from petsml.tracking.model_registry import ModelRegistry

    return ModelRegistry(model_name(args), args.tracking_uri)


def aliased_version(args: argparse.Namespace):
    """The registry of ``args`` and the version its ``--alias`` names; an alias that names none
    is an error saying how to make one."""
    reg = registry(args)
    holder = reg.by_alias(args.alias)
    if holder is None:
        raise PetsError(
            f"{reg.name} has no '{args.alias}' alias in {reg.tracking_uri}: run the "
            "pipeline (`pets run`) or `pets promote <version> --reason ...`."
        )
    return reg, holder


def file_problem(file: str) -> str | None:
    """Why a named file cannot be read (``None``: it can): reported on its own row."""
    path = Path(file)
    if not path.exists():
        return f"no such file: {file}"
    if not path.is_file():
        return f"not a file: {file}"
    return None


def parser_for(sub, name: str, *, parents=(), help: str, description: str, epilog: str,
               aliases=()) -> argparse.ArgumentParser:  # fmt: skip
    """A subcommand whose help keeps its layout (epilog with the exit codes) and shows
    every option's default."""
    return sub.add_parser(
        name,
        parents=list(parents),
        help=help,
        description=description,
        epilog=epilog,
        aliases=list(aliases),
        formatter_class=HelpFormatter,
    )


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """A one-paragraph description wrapped, an epilog with lines (examples, exit codes) as
    written; every option with a default says it."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "%(default)" in text or action.default in (None, False, argparse.SUPPRESS):
            return text
        return super()._get_help_string(action)
