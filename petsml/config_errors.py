"""What a bad ``params.yaml`` is told: one line per wrong key, dotted, with the fix.

Pydantic's own messages name a location tuple and an error type; these turn them into
``train.epoch: unknown key; did you mean train.epochs?`` and the like.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel, ValidationError


def _section_model(root: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The params class at dotted ``loc`` (``("train",)`` -> TrainParams); None past a leaf."""
    model: type[BaseModel] = root
    for part in loc:
        fields = {field.alias or name: field for name, field in model.model_fields.items()}
        annotation = getattr(fields.get(str(part)), "annotation", None)
        models = [a for a in (annotation, *get_args(annotation)) if _is_model(a)]  # X | None
        if not models:
            return None
        model = models[0]
    return model


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _unknown_key(root: type[BaseModel], loc: tuple[Any, ...]) -> str:
    """What to say about a key the schema does not have: the nearest valid one, or the list."""
    parent = _section_model(root, loc[:-1])
    if parent is None:
        return "unknown key"
    valid = sorted(field.alias or name for name, field in parent.model_fields.items())
    prefix = "".join(f"{part}." for part in loc[:-1])
    close = difflib.get_close_matches(str(loc[-1]), valid, n=1, cutoff=0.6)
    if close:
        return f"unknown key; did you mean {prefix}{close[0]}?"
    return f"unknown key; valid keys here: {', '.join(prefix + name for name in valid)}"


def _problem(root: type[BaseModel], item: Any) -> str:
    kind, value = item["type"], item.get("input")
    if kind == "extra_forbidden":
        return _unknown_key(root, tuple(item["loc"]))
    if kind == "missing":
        return "required key is missing"
    if kind == "string_type" and isinstance(value, bool | int | float):
        leaf = item["loc"][-1]
        return (
            f"YAML read this value as a {'boolean' if isinstance(value, bool) else 'number'} "
            f'({value!r}), not as text; put it in quotes: {leaf}: "<value as written>"'
        )
    message = str(item["msg"]).removeprefix("Value error, ")
    if kind == "value_error" and isinstance(value, dict):  # a section's cross-key rule
        return message
    if kind == "value_error":  # our own rule: its message names the value already
        return message
    return f"{message} (got {value!r})"


def _key_of(root: type[BaseModel], item: Any) -> str:
    """Dotted key of an error; a section rule's message that opens with ``<key>:`` names it."""
    loc = [str(part).replace("validate_", "validate") for part in item["loc"]]
    if item["type"] == "value_error" and isinstance(item.get("input"), dict):
        head, sep, _ = str(item["msg"]).removeprefix("Value error, ").partition(": ")
        section = _section_model(root, tuple(loc))
        if sep and section is not None and head in section.model_fields:
            loc.append(head)
    return ".".join(loc) or "<root>"


def describe(root: type[BaseModel], error: ValidationError, path: Path) -> str:
    """The message of a :class:`ConfigError` for ``error`` in the file ``path``."""
    lines = [f"{path}: invalid configuration"]
    # Unknown keys first: a misspelt key usually also leaves the real one missing.
    items = sorted(error.errors(), key=lambda item: item["type"] != "extra_forbidden")
    for item in items:
        problem = _problem(root, item)
        key = _key_of(root, item)
        if key != ".".join(map(str, item["loc"])).replace("validate_", "validate"):
            problem = problem.partition(": ")[2]  # the key moved from the message to the line
        lines.append(f"  {key}: {problem}")
    lines.append(f"Fix the key(s) above in {path}.")
    return "\n".join(lines)
