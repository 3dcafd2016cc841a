"""The one wrapper every DVC stage entry point runs under."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from petsml.errors import PetsError
from petsml.logs import setup_logging

log = logging.getLogger("petsml.stage")


def run_stage(name: str, main: Callable[[], None]) -> None:
    """Run a stage's ``main``; a :class:`PetsError` becomes a clean message and exit code 1."""
    setup_logging()
    try:
        main()
    except PetsError as error:
        log.error("stage %s failed: %s", name, error)
        print(f"\nERROR [{name}]: {error}", file=sys.stderr)
        sys.exit(1)
