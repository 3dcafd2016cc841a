"""No test proves anything with the wall clock: `assert elapsed < 5` passes or fails with the
machine's load (CI runs right after a session, on the same 2 cores). A test proves the
mechanism instead (the decoder never called, peak memory under a bound, nothing dialled) and
timings live in benchmarks/.

This scans every module under tests/ for an ``assert`` comparing an elapsed time: a difference
of clock readings (``time.monotonic() - started``), or a name bound to one. Deadlines stay
allowed (``assert time.monotonic() < deadline, "never became healthy"``): they bound a wait
for something that must happen, and only fail when it never does.
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
CLOCKS = {"time", "monotonic", "perf_counter", "monotonic_ns", "perf_counter_ns", "time_ns",
          "process_time", "default_timer"}  # fmt: skip


def _is_clock_call(node: ast.AST) -> bool:
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    return name in CLOCKS


def _is_elapsed(node: ast.AST, elapsed_names: set[str]) -> bool:
    """A clock reading minus something (or something minus one), or a name bound to that."""
    for sub in ast.walk(node):
        if isinstance(sub, ast.BinOp) and isinstance(sub.op, ast.Sub):
            if any(_is_clock_call(part) for side in (sub.left, sub.right)
                   for part in ast.walk(side)):  # fmt: skip
                return True
        if isinstance(sub, ast.Name) and sub.id in elapsed_names:
            return True
    return False


def clock_asserts(source: str) -> list[int]:
    """Line numbers of ``assert`` statements comparing an elapsed wall-clock time."""
    tree = ast.parse(source)
    elapsed_names: set[str] = set()
    for node in ast.walk(tree):  # any name ever bound to an elapsed time, in any scope
        if isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign) and node.value:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if _is_elapsed(node.value, elapsed_names):
                elapsed_names |= {t.id for t in targets if isinstance(t, ast.Name)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assert):
            for compare in (n for n in ast.walk(node.test) if isinstance(n, ast.Compare)):
                if _is_elapsed(compare, elapsed_names):
                    found.append(node.lineno)
                    break
    return sorted(found)


def test_no_test_module_asserts_on_elapsed_wall_time():
    offenders = [
        f"{path.relative_to(TESTS.parent)}:{line}"
        for path in sorted(TESTS.rglob("*.py"))
        for line in clock_asserts(path.read_text())
    ]
    assert offenders == [], "wall-clock assertions (prove the mechanism instead): " + ", ".join(
        offenders
    )


def test_the_scan_finds_each_form_and_allows_deadlines():
    """The scan itself must be able to fail: each form it looks for, and the deadline it keeps."""
    caught = """
import time
from time import perf_counter
started = time.monotonic()
assert time.monotonic() - started < 5
seconds = perf_counter() - started
assert seconds < 3.0, "slow"
def f():
    t0 = time.time()
    took = time.time() - t0
    assert 0 < took <= 15
"""
    assert clock_asserts(caught) == [5, 7, 11]
    allowed = """
import time
deadline = time.monotonic() + 30
while True:
    assert time.monotonic() < deadline, "never became healthy"
    seconds = 4
    assert seconds == 4
"""
    assert clock_asserts(allowed) == []
