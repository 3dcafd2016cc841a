"""``--cpu-load N`` (or ``PETSML_TEST_CPU_LOAD=N``): the run under N busy-looping processes.

CI shares its 2-core machine with other work, often under load; a test that only
passes on a quiet machine is a coin toss there. This plugin starts N processes that spin on a
core each for the whole run (started once, in the xdist controller or the lone pytest process)
and stops them when the run ends; each also stops by itself if pytest dies (its parent changes).
See docs/DEVELOPING.md. Loaded by tests/conftest.py; ``-p tests.cpu_load`` loads it alone.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ENV = "PETSML_TEST_CPU_LOAD"
MARKER = "petsml-cpu-load"  # in each busy loop's command line, to find them
# Spins, checking every ~50 ms of work that pytest (its parent) is still there.
BUSY_LOOP = (
    f"import os, sys  # {MARKER}\n"
    "parent = os.getppid()\n"
    "while os.getppid() == parent:\n"
    "    for _ in range(200_000):\n"
    "        pass\n"
)
_LOAD_KEY = pytest.StashKey[list]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--cpu-load", type=int, default=None, metavar="N",
        help=f"run the tests under N busy-looping background processes (default ${ENV} or 0)",
    )  # fmt: skip


def _wanted(config: pytest.Config) -> int:
    value = config.getoption("--cpu-load")
    if value is None:
        text = os.environ.get(ENV, "").strip() or "0"
        try:
            value = int(text)
        except ValueError:
            raise pytest.UsageError(f"{ENV}={text!r}: give a number of busy loops") from None
    if value < 0:
        raise pytest.UsageError(f"--cpu-load {value}: give 0 or more busy loops")
    return value


def pytest_configure(config: pytest.Config) -> None:
    if hasattr(config, "workerinput"):  # an xdist worker: the controller holds the load
        return
    busy = [
        subprocess.Popen([sys.executable, "-c", BUSY_LOOP, MARKER], stdin=subprocess.DEVNULL)
        for _ in range(_wanted(config))
    ]
    config.stash[_LOAD_KEY] = busy


def pytest_report_header(config: pytest.Config) -> str | None:
    busy = config.stash.get(_LOAD_KEY, [])
    if busy:
        return f"background CPU load: {len(busy)} busy loop(s), pids {[p.pid for p in busy]}"
    return None


def pytest_unconfigure(config: pytest.Config) -> None:
    for process in config.stash.get(_LOAD_KEY, []):
        process.terminate()
    for process in config.stash.get(_LOAD_KEY, []):
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
