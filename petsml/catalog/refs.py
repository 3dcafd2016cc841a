"""``"module:attribute"`` references: how a registry row names code without importing it."""

from __future__ import annotations

import importlib
from typing import Any

from petsml.errors import PetsError


class RefError(PetsError):
    """A registry row names code that cannot be imported."""


def resolve(ref: str) -> Any:
    """The object ``ref`` (``"package.module:name"``) names; a clear error otherwise."""
    module, sep, name = ref.partition(":")
    if not sep or not module or not name:
        raise RefError(f"{ref!r} is not a 'module:attribute' reference")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as error:
        raise RefError(f"{ref}: cannot import it ({error})") from error
