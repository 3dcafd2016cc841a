"""Which params a process read: the evidence that each stage's ``params:`` list in dvc.yaml
covers what the stage uses (a value read but not listed is a result DVC calls up to date
after that value changed).

With ``PETS_PARAMS_LOG`` naming a file, every leaf value read from a loaded ``Params`` is
recorded under its dotted key (a whole section read at once, ``model_dump``, records the
section), and at exit the process appends one JSON line: its command line and the keys.
``tests/test_pipeline_e2e.py`` runs the pipeline so and checks every stage's reads against its
declared params. Unset, nothing is recorded.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

ENV = "PETS_PARAMS_LOG"

READS: set[str] | None = set() if os.environ.get(ENV) else None


_paused = 0


def record(key: str) -> None:
    if READS is not None and not _paused:
        READS.add(key)


@contextmanager
def paused() -> Iterator[None]:
    """Reads inside the block are not recorded (parsing and checking the file reads every
    value; what counts is what the stage reads afterwards)."""
    global _paused
    _paused += 1
    try:
        yield
    finally:
        _paused -= 1


def _flush() -> None:
    target = os.environ.get(ENV)
    if READS and target:
        line = json.dumps({"argv": sys.argv, "keys": sorted(READS)})
        with open(target, "a", encoding="utf-8") as handle:  # one short append per process
            handle.write(line + "\n")


if READS is not None:
    atexit.register(_flush)
