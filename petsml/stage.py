"""The one wrapper every DVC stage entry point runs under."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from petsml.errors import PetsError
from petsml.logs import setup_logging

log = logging.getLogger("petsml.stage")


INTERRUPTED = 130  # the shell's code for a process ended by SIGINT (128 + 2)


def run_stage(name: str, main: Callable[[], None]) -> None:
    """Run a stage's ``main``; a :class:`PetsError` becomes a clean message and exit code 1,
    Ctrl-C one line saying what was saved (an exception's ``saved`` sentence, e.g. training's
    checkpoint) and exit code 130, instead of a traceback."""
    setup_logging()
    try:
        main()
    except PetsError as error:
        log.error("stage %s failed: %s", name, error)
        print(f"\nERROR [{name}]: {error}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt as interrupt:
        saved = getattr(interrupt, "saved", None) or (
            f"stage {name} interrupted; its outputs are written atomically, so nothing "
            "half-written is left; `dvc repro` runs it again"
        )
        print(f"\nINTERRUPTED [{name}]: {saved}", file=sys.stderr, flush=True)
        sys.exit(INTERRUPTED)
