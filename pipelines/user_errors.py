"""A flow's params error as the user made it: named by what they typed, without a traceback.

A flow checks the ``params.yaml`` it will run with before any stage. With overrides that file
is a temporary copy (``.dvc/tmp/flows/<run>/params.yaml``, deleted when the run ends), so
:class:`petsml.config.ConfigError`'s "Fix model.backbone in <that copy>" pointed at nothing the
user could open, when the bad value came from ``-S model.backbone=...``. Here the message names
the override that set each bad key (or the project's own ``params.yaml`` when no override did),
and the flow ends as a Failed state carrying that message: a user error, not a crash, so no
25-line Prefect traceback.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from prefect.states import Failed, State

from petsml.config import ConfigError

_BAD_KEY = re.compile(r"^  ([A-Za-z0-9_.+-]+): ", re.MULTILINE)  # "  model.backbone: ..."
_FIX_LINE = re.compile(r"^Fix (\S+) in (\S+)\.$", re.MULTILINE)


def bad_keys(message: str) -> list[str]:
    """The params keys a ConfigError names, in order."""
    return list(dict.fromkeys(_BAD_KEY.findall(message)))


def override_of(key: str, overrides: Sequence[str]) -> str | None:
    """The last override (``key=value``, ``+key=value``, ``++key=value``) that sets ``key``."""
    found = None
    for item in overrides:
        name = item.split("=", 1)[0].lstrip("+~").strip()
        if name == key or key.startswith(f"{name}."):
            found = item
    return found


def explain(
    error: ConfigError, checked: Path, project_params: Path, overrides: Sequence[str]
) -> str:
    """``error`` (raised for the copy ``checked``) re-worded for the user: the copy's path
    becomes the project's ``params.yaml`` (with the overrides, when any set a bad key), and
    each bad key is fixed where it came from: the override that set it, or the file."""
    message = str(error)
    keys = bad_keys(message)
    typed = {key: override_of(key, overrides) for key in keys}
    where = str(project_params)
    if any(typed.values()):
        where += " with the override(s) " + " ".join(repr(item) for item in overrides)
    message = _FIX_LINE.sub("", message).rstrip().replace(str(checked), where)
    fixes = []
    for key, item in typed.items():
        if item:
            message = message.replace(f"  {key}: ", f"  {key} (from the override {item!r}): ", 1)
            fixes.append(f"Fix the override {item!r} (given as `-S {item}` or the flow parameter "
                         f"that sets {key}); {project_params} itself is not where it came "
                         "from.")  # fmt: skip
        else:
            fixes.append(f"Fix {key} in {project_params}.")
    return "\n".join([message, *fixes])


def failed(message: str) -> State:
    """The flow's end state for a user error: Failed with ``message``, no exception logged."""
    return Failed(message=message)
