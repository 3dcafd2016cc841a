"""What every ``pets`` subcommand shares: naming the registered model, the registry, files."""

from __future__ import annotations

import argparse
from pathlib import Path

from petsml.errors import PetsError


def common_options() -> argparse.ArgumentParser:
    """The options of every command that talks to the registry (a parent parser)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--task", choices=("breed", "species"), help="overrides data.task")
    common.add_argument("--model-name", help="registered model name (default <prefix>-<task>)")
    common.add_argument("--params", default="params.yaml", help="params file (default %(default)s)")
    common.add_argument(
        "--tracking-uri", help="MLflow tracking/registry URI (default MLFLOW_TRACKING_URI)"
    )
    return common


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


def file_problem(file: str) -> str | None:
    """Why a named file cannot be read (``None``: it can): reported on its own row."""
    path = Path(file)
    if not path.exists():
        return f"no such file: {file}"
    if not path.is_file():
        return f"not a file: {file}"
    return None
