"""Which photos went through which network: the evidence behind "one frozen pass per photo".

Every pass of a network over the project's photos reads them through
:func:`petsml.data.prefetch.input_batches`, which calls :func:`record` once per pass. With
``PETS_PASS_LOG`` naming a file, each call appends a JSON line (``network``, ``split``,
``images``, the process id); unset, it does nothing. ``benchmarks/fullsize.py`` sums them per
stage and ``tests/test_one_pass.py`` asserts on them: counted calls, never timings.
"""

from __future__ import annotations

import json
import os

ENV = "PETS_PASS_LOG"


def record(network: str, split: str, images: int) -> None:
    """Append one pass (``images`` photos through ``network``) to ``$PETS_PASS_LOG``, if set."""
    target = os.environ.get(ENV)
    if not target or not images:
        return
    line = json.dumps({"network": network, "split": split, "images": int(images),
                       "pid": os.getpid()})  # fmt: skip
    with open(target, "a", encoding="utf-8") as handle:  # one short append: atomic on POSIX
        handle.write(line + "\n")


def read_log(path: str | os.PathLike) -> list[dict]:
    """The recorded passes, in order."""
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]
