"""`pets ui` and `pets web` as real processes: a busy port is refused before anything is
printed, and every signal that ends them (a closed terminal's SIGHUP, `kill`'s SIGTERM,
Ctrl-C's SIGINT) ends every process they started, with the port released."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from petsml.testing.project import tool_env

pytestmark = [pytest.mark.slow(seconds=150), pytest.mark.integration]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _process_tree(pid: int) -> list[int]:
    """``pid``'s live descendants, read from /proc independently of the code under test."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        kids = [child for child, ppid in parents.items() if ppid == parent]
        found += kids
        todo += kids
    return found


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"  # a zombie has ended; only its parent's wait is missing


def _start(args: list[str], cwd: Path, **env: str) -> subprocess.Popen:
    # its own session, as from a terminal: the signal goes to `pets` alone, as `kill PID` does
    return subprocess.Popen(
        [sys.executable, "-m", "petsml.cli", *args], cwd=cwd, env=tool_env(**env),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip


def _wait_until_serving(process: subprocess.Popen, url: str) -> None:
    deadline = time.monotonic() + 180
    while True:
        assert process.poll() is None, process.stdout.read()[-3000:]
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            assert time.monotonic() < deadline, f"{url} never answered"
            time.sleep(0.5)


def _end_with(process: subprocess.Popen, sig: int, port: int) -> None:
    """Send ``sig`` to `pets` alone; it must exit 128+sig and take every child with it."""
    tree = _process_tree(process.pid)
    try:
        process.send_signal(sig)
        code = process.wait(timeout=60)
        assert code == 128 + sig, (code, process.stdout.read()[-3000:])
        deadline = time.monotonic() + 30
        while [pid for pid in tree if _running(pid)] or _listening(port):
            left = [pid for pid in tree if _running(pid)]
            assert time.monotonic() < deadline, (
                f"after {signal.Signals(sig).name}: processes {left} outlived pets, "
                f"port {port} listening: {_listening(port)}"
            )
            time.sleep(0.2)
    finally:
        for pid in [process.pid, *tree]:
            if _running(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if process.poll() is None:
            process.wait(timeout=30)


def test_ui_on_a_busy_port_exits_non_zero_naming_the_port_before_printing_a_link(tmp_path):
    (tmp_path / "mlflow.db").touch()  # a store, so the port is what stops it
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "petsml.cli", "ui", "--port", str(port),
             "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"],
            cwd=tmp_path, env=tool_env(), capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert result.returncode != 0, result.stdout + result.stderr
    assert "MLflow UI:" not in result.stdout  # no link to whatever holds the port
    assert f"port {port}" in result.stderr and "--port" in result.stderr, result.stderr


def test_web_on_a_busy_port_exits_non_zero_before_loading_a_model(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "petsml.cli", "web", "--port", str(port),
             "--model-name", "nothing-registered",
             "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"],
            cwd=tmp_path, env=tool_env(), capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert result.returncode != 0
    assert f"port {port}" in result.stderr and "--port" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_every_ending_signal_ends_the_mlflow_ui_and_all_its_workers(registered_project, sig):
    project, uri, _ = registered_project
    port = _free_port()
    # MLflow's job runner on (`pets ui` leaves it off by default): its huey consumers run in
    # sessions of their own, the hardest processes to take down with `pets`
    ui = _start(["ui", "--port", str(port), "--tracking-uri", uri], project,
                MLFLOW_SERVER_ENABLE_JOB_EXECUTION="true")  # fmt: skip
    _wait_until_serving(ui, f"http://127.0.0.1:{port}/health")
    assert _process_tree(ui.pid), "mlflow ui started no processes"
    _end_with(ui, sig, port)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_every_ending_signal_ends_the_web_page_server(registered_project, sig):
    project, uri, _ = registered_project
    port = _free_port()
    web = _start(["web", "--port", str(port), "--tracking-uri", uri], project)
    _wait_until_serving(web, f"http://127.0.0.1:{port}/api/model")
    _end_with(web, sig, port)
