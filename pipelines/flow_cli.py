"""Command lines generated from a flow's own signature: one declaration of its parameters.

Each parameter of the flow function becomes ``--<name-with-dashes>`` with ``dest=<name>`` and
the flow's default; its type hint decides the form (``bool``: a switch, ``--no-<name>`` when it
defaults to true; ``list[...]``: one or more values; ``Literal[...]``: choices; ``int`` and
``float``: converted), and its help is the parameter's line in the docstring's ``Args:``
section, the same text Prefect shows for it in the UI. ``options`` adds the few things a
signature cannot say (a short flag, a metavar, a repeatable option).
"""

from __future__ import annotations

import argparse
import inspect
import re
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Literal

from prefect.utilities.callables import parameter_docstrings

# ``-S key=value``, repeatable, as ``dvc exp run -S``: for a ``set_params: list[str]`` parameter
SET_PARAM_OPTION = {
    "flags": ("-S", "--set-param"),
    "action": "append",
    "nargs": None,
    "metavar": "KEY=VALUE",
}


def _form(name: str, hint: Any, default: Any) -> dict[str, Any]:
    """``add_argument`` keywords for a parameter of type ``hint`` (``X | None`` reads as X)."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        kinds = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        hint = kinds[0] if len(kinds) == 1 else hint
    origin = typing.get_origin(hint)
    if hint is bool:
        return {"action": "store_false" if default else "store_true"}
    if origin is list:
        (item,) = typing.get_args(hint)
        return {"nargs": "+"} | ({} if item is str else {"type": item})
    if origin is Literal:
        return {"choices": list(typing.get_args(hint))}
    if hint in (int, float):
        return {"type": hint}
    if hint is str:
        return {}
    raise TypeError(f"flow parameter {name}: no command-line form for {hint}")


def _help(text: str | None, default: Any) -> str | None:
    """The docstring's text for the parameter, plain (argparse wraps it), with its default."""
    if not text:
        return None
    text = " ".join(re.sub(r"``(.*?)``", r"\1", text).split()).replace("%", "%%")
    if default is True:  # the option is --no-<name>
        return f"turn off (on by default): {text}"
    if default is not None and default is not False:
        text = f"{text.removesuffix('.')} (default: {default})."
    return text


def add_flow_arguments(
    parser: argparse.ArgumentParser,
    fn: Callable[..., Any],
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> None:
    """One option per parameter of ``fn`` (a flow's ``.fn``), ``dest`` = the parameter name."""
    hints = typing.get_type_hints(fn)
    helps = parameter_docstrings(inspect.getdoc(fn))
    for name, parameter in inspect.signature(fn).parameters.items():
        if parameter.default is inspect.Parameter.empty:
            raise TypeError(f"flow parameter {name} has no default: a command line needs one")
        flag = name.replace("_", "-")
        if hints[name] is bool and parameter.default:
            flag = f"no-{flag}"
        extra = dict((options or {}).get(name, {}))
        flags = extra.pop("flags", (f"--{flag}",))
        parser.add_argument(
            *flags,
            dest=name,
            default=parameter.default,
            help=_help(helps.get(name), parameter.default),
            **{**_form(name, hints[name], parameter.default), **extra},
        )
