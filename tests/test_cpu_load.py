"""``--cpu-load N``: a real pytest run, under N real busy loops that stop when it ends."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from petsml.testing.project import REPO, tool_env
from tests.cpu_load import MARKER

pytestmark = pytest.mark.integration

INNER = textwrap.dedent(
    f"""
    import os
    from pathlib import Path

    def _loops():
        found = []
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                args = cmdline.read_bytes().split(b"\\0")
                stat = (cmdline.parent / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if {MARKER!r}.encode() in args and int(stat[1]) == os.getpid():
                found.append(int(cmdline.parent.name))
        return found

    def test_the_busy_loops_run_beside_the_tests():
        loops = _loops()
        Path(os.environ["LOOPS_FILE"]).write_text(" ".join(map(str, loops)))
        assert len(loops) == int(os.environ["EXPECTED"])
    """
)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _run(tmp_path: Path, args: list[str], expected: int, **env: str) -> list[int]:
    (tmp_path / "test_inner.py").write_text(INNER)
    loops_file = tmp_path / "loops.txt"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.cpu_load",
         "--rootdir", str(tmp_path), *args, str(tmp_path / "test_inner.py")],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env=tool_env(LOOPS_FILE=str(loops_file), EXPECTED=str(expected), PYTHONPATH=str(REPO),
                     **env),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return [int(pid) for pid in loops_file.read_text().split()]


def test_cpu_load_option_runs_busy_loops_for_the_run_and_stops_them(tmp_path):
    loops = _run(tmp_path, ["--cpu-load", "2"], expected=2)
    assert len(loops) == 2
    assert not [pid for pid in loops if _alive(pid)], "busy loops outlived the run"


def test_the_environment_variable_asks_the_same_and_no_load_is_the_default(tmp_path):
    assert len(_run(tmp_path, [], expected=1, PETSML_TEST_CPU_LOAD="1")) == 1
    assert _run(tmp_path, [], expected=0, PETSML_TEST_CPU_LOAD="") == []
