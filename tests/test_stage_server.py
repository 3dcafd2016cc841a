"""The stage server: a stage handed to it runs in a fork exactly as ``python -m`` runs it.

Each test starts its own server (preloading one small module, so it is ready in a moment) and
runs a stand-in stage, ``stages/echo.py`` in a temporary project holding a copy of ``petsml``,
as a plain subprocess, as DVC starts stages. What a fork must keep from the caller is
checked from what the stage prints; that it ran in a fork, from its pid and the server's log.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from petsml.stage_client import ENV, IDLE_ENV, MAX_SOCKET_PATH, identity, shared_socket
from petsml.stage_server import serving, wait_ready
from petsml.testing.project import REPO

pytestmark = pytest.mark.integration

ECHO = """
import os, sys, time
import petsml
print("pid", os.getpid())
print("argv", " ".join(sys.argv[1:]))
print("cwd", os.getcwd())
print("value", os.environ.get("PETS_TEST_VALUE"))
print("petsml", petsml.__file__)
print("edition", EDITION)
print("to stderr", file=sys.stderr)
sys.stdout.flush()
if sys.argv[1] == "wait":
    import subprocess
    helper = subprocess.Popen(["sleep", "120"])  # a process of the stage's own
    print("helper", helper.pid, flush=True)
    try:
        print("waiting", flush=True)  # inside the try: a Ctrl-C from now on is caught below
        time.sleep(120)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        sys.exit(130)
sys.exit(int(sys.argv[1]))
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A folder with ``stages/`` (the real package init + the echo stage) and a copy of petsml."""
    root = tmp_path / "project"
    (root / "stages").mkdir(parents=True)
    shutil.copy(REPO / "stages" / "__init__.py", root / "stages" / "__init__.py")
    (root / "stages" / "echo.py").write_text("EDITION = 1\n" + ECHO)
    shutil.copytree(REPO / "petsml", root / "petsml",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    return root


@pytest.fixture
def server(tmp_path: Path, monkeypatch):
    """A server of this test's own (the suite's session server is set aside), and its log."""
    monkeypatch.delenv(ENV, raising=False)
    log = tmp_path / "server.log"
    with serving(log=log, preload=("json",)) as path:
        assert path is not None and wait_ready(path), log.read_text()
        yield log


def _stage(project: Path, *args: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "stages.echo", *args], cwd=project, env=os.environ | env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _printed(out: str) -> dict[str, str]:
    return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)


def test_a_stage_runs_in_a_fork_as_python_m_would_run_it(server, project):
    stage = _stage(project, "3", "two words", PETS_TEST_VALUE="from the caller")
    out, err = stage.communicate(timeout=120)
    printed = _printed(out)
    assert stage.returncode == 3, err  # the stage's exit status is the caller's
    assert int(printed["pid"]) != stage.pid  # not run by the process DVC started...
    assert f"[{printed['pid']}] stages.echo 3 two words: forked in {project}" in server.read_text()
    assert printed["argv"] == "3 two words"
    assert printed["cwd"] == str(project)
    assert printed["value"] == "from the caller"  # the caller's environment, not the server's
    assert "to stderr" in err
    # the project's own petsml, imported afresh in the fork, not the server's
    assert Path(printed["petsml"]).resolve() == (project / "petsml" / "__init__.py").resolve()


def test_an_edited_stage_runs_as_edited(server, project):
    first = _stage(project, "0")
    assert _printed(first.communicate(timeout=120)[0])["edition"] == "1"
    (project / "stages" / "echo.py").write_text("EDITION = 2\n" + ECHO)
    second = _stage(project, "0")
    out, err = second.communicate(timeout=120)
    assert second.returncode == 0, err
    assert _printed(out)["edition"] == "2"
    assert server.read_text().count("stages.echo 0: forked") == 2


def test_a_caller_with_other_import_time_settings_runs_cold(server, project):
    threads = "7" if os.environ.get("OMP_NUM_THREADS") != "7" else "5"
    stage = _stage(project, "0", OMP_NUM_THREADS=threads)
    out, err = stage.communicate(timeout=120)
    assert stage.returncode == 0, err
    assert int(_printed(out)["pid"]) == stage.pid  # ran here, in the caller
    assert "stages.echo: runs cold (env OMP_NUM_THREADS differ)" in server.read_text()


def test_a_setting_read_only_when_used_does_not_make_a_stage_cold(server, project):
    """Importing timm sets TORCHINDUCTOR_CACHE_DIR in the importing process (a flow, a test);
    the fork takes the caller's environment, so it reads the caller's value when it compiles."""
    stage = _stage(project, "0", TORCHINDUCTOR_CACHE_DIR=str(project / "inductor"))
    out, err = stage.communicate(timeout=120)
    assert stage.returncode == 0, err
    assert int(_printed(out)["pid"]) != stage.pid, server.read_text()  # forked
    assert "runs cold" not in server.read_text()


def test_without_a_reachable_server_the_stage_runs_cold(project, tmp_path):
    stage = _stage(project, "0", **{ENV: str(tmp_path / "no-such.sock")})
    out, err = stage.communicate(timeout=120)
    assert stage.returncode == 0, err
    assert int(_printed(out)["pid"]) == stage.pid


def _wait_for(stage: subprocess.Popen) -> tuple[int, int]:
    """The pids the stage and its helper process print, once the stage is waiting."""
    assert stage.stdout is not None
    pids = {}
    for line in stage.stdout:
        if line.startswith(("pid ", "helper ")):
            pids[line.split()[0]] = int(line.split()[1])
        if line.startswith("waiting"):
            return pids["pid"], pids["helper"]
    raise AssertionError(f"the stage ended early: {stage.stderr.read() if stage.stderr else ''}")


def test_ctrl_c_reaches_the_stage_once_and_its_status_comes_back(server, project):
    stage = _stage(project, "wait")
    forked, _ = _wait_for(stage)
    assert forked != stage.pid
    stage.send_signal(signal.SIGINT)  # what the terminal sends DVC's process group
    out, _ = stage.communicate(timeout=120)
    assert "interrupted" in out
    assert stage.returncode == 130


def test_a_killed_caller_takes_its_stage_with_it(server, project):
    stage = _stage(project, "wait")
    forked, helper = _wait_for(stage)
    stage.kill()  # SIGKILL: nothing forwarded; the fork sees its caller's socket close
    stage.wait(timeout=60)
    deadline = time.monotonic() + 60
    for pid, what in ((forked, "the stage"), (helper, "the stage's own process")):
        while _alive(pid):
            assert time.monotonic() < deadline, f"{what} outlived its caller"
            time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_serving_is_a_no_op_when_a_server_is_already_set(monkeypatch):
    monkeypatch.setenv(ENV, "/somewhere/else.sock")
    with serving(preload=()) as path:
        assert path is None
        assert os.environ[ENV] == "/somewhere/else.sock"


def test_plain_dvc_repro_starts_a_shared_server_that_stops_when_idle(project, tmp_path,
                                                                     monkeypatch):  # fmt: skip
    """No server set: the first stage starts the shared one and runs cold, the next is a fork;
    with nothing to do, the server stops and removes its socket."""
    monkeypatch.delenv(ENV, raising=False)
    short = Path(tempfile.mkdtemp(prefix="st-", dir="/tmp"))  # a socket path holds 107 bytes
    monkeypatch.setenv("TMPDIR", str(short))  # the shared server's folder, this test's own
    monkeypatch.setenv(IDLE_ENV, "3")
    first = _stage(project, "0")
    out, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    assert int(_printed(out)["pid"]) == first.pid  # cold: the server was only being started
    sockets = short / f"pets-stages-{os.getuid()}"
    deadline = time.monotonic() + 120
    while not list(sockets.glob("*.sock")):
        assert time.monotonic() < deadline, "the shared server never came up"
        time.sleep(0.1)
    second = _stage(project, "0")
    out, err = second.communicate(timeout=120)
    assert second.returncode == 0, err
    assert int(_printed(out)["pid"]) != second.pid  # a fork of the shared server
    deadline = time.monotonic() + 120
    while list(sockets.glob("*.sock")):
        assert time.monotonic() < deadline, "the idle shared server did not stop"
        time.sleep(0.2)
    shutil.rmtree(short, ignore_errors=True)


def test_a_deep_temporary_folder_still_gives_a_socket_path_that_fits(tmp_path, monkeypatch):
    """A Unix socket path holds 107 bytes: under a deep TMPDIR the shared socket moves to /tmp."""
    deep = tmp_path / ("deep" * 20)
    deep.mkdir()
    monkeypatch.setenv("TMPDIR", str(deep))
    monkeypatch.setattr(tempfile, "tempdir", None)  # gettempdir() caches its first answer
    path = shared_socket(identity())
    assert len(path) <= MAX_SOCKET_PATH
    assert Path(path).parent.is_dir()


def test_a_socket_left_by_a_killed_shared_server_is_replaced(project, monkeypatch):
    """The shared server was killed and left its socket: the stage runs cold and starts a new
    server in its place, and the next stage is a fork again."""
    monkeypatch.delenv(ENV, raising=False)
    short = Path(tempfile.mkdtemp(prefix="st-", dir="/tmp"))
    monkeypatch.setenv("TMPDIR", str(short))
    monkeypatch.setenv(IDLE_ENV, "3")
    monkeypatch.setattr(tempfile, "tempdir", None)
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    path = shared_socket(identity())  # the stage's own answer: the same interpreter and env
    dead.bind(path)  # bound, never listening, then closed: what a killed server leaves
    dead.close()
    dead_inode = os.stat(path).st_ino
    first = _stage(project, "0")
    out, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    assert int(_printed(out)["pid"]) == first.pid
    deadline = time.monotonic() + 120
    while True:
        second = _stage(project, "0")
        out, err = second.communicate(timeout=120)
        assert second.returncode == 0, err
        if int(_printed(out)["pid"]) != second.pid:
            break  # a fork of the new server
        assert time.monotonic() < deadline, "no new shared server replaced the dead one"
        time.sleep(0.5)
    assert os.stat(path).st_ino != dead_inode  # a new server's socket at the same path
    shutil.rmtree(short, ignore_errors=True)
