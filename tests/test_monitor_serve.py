"""End to end through ``mlflow models serve``, on real Oxford-IIIT Pet photos (the shared
sample; skipped with the reason without it): the champion served on loopback records what it
answers (the ``monitor:`` section logged with it, the store relative to the server's working
folder), each answer names its ``prediction_id``, and ``pets monitor`` run after each window
flags only the shifted one (greyscale and blurred copies of the same photos).
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from petsml.testing.browser import free_port
from petsml.testing.project import SHARED_SAMPLE
from tests.loop import loop_project, shifted, val_files

pytestmark = pytest.mark.integration

PING_TIMEOUT_S = 180


def _post(url: str, images: list[str]) -> list[dict]:
    payload = {"dataframe_split": {"columns": ["image"], "data": [[i] for i in images]}}
    request = urllib.request.Request(url, data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(request, timeout=300) as response:
        return json.loads(response.read())["predictions"]


def _wait(base: str, server: subprocess.Popen, log: Path) -> None:
    started = time.monotonic()
    while time.monotonic() - started < PING_TIMEOUT_S:
        if server.poll() is not None:
            pytest.fail(f"server exited with {server.returncode}:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(f"{base}/ping", timeout=2):
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
    pytest.fail(f"no /ping after {PING_TIMEOUT_S}s:\n{log.read_text()[-4000:]}")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(project, tracking URI, invocations URL) of the loop project's champion, served."""
    photos = SHARED_SAMPLE / "images"
    if not sorted(photos.glob("pug_*.jpg")):
        reason = f"no real photos in {photos} (the Oxford-IIIT Pet sample folder)"
        print(f"SKIP served monitoring test: {reason}", file=sys.stderr)
        pytest.skip(reason)
    project, uri = loop_project(tmp_path_factory.mktemp("served"), photos=photos)
    port, log = free_port(), project / "server.log"
    env = dict(os.environ, MLFLOW_TRACKING_URI=uri)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop("PYTHONPATH", None)  # the model brings its own petsml
    command = ["mlflow", "models", "serve", "-m", "models:/oxford-pets-breed@champion",
               "--env-manager", "local", "-p", str(port), "-h", "127.0.0.1", "-w", "1"]  # fmt: skip
    with open(log, "wb") as out:
        server = subprocess.Popen(command, cwd=project, env=env, stdout=out,
                                  stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        _wait(base, server, log)
        yield project, uri, f"{base}/invocations"
    finally:
        try:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)


def _monitor(project: Path, uri: str, capsys) -> tuple[int, dict]:
    from petsml.cli import main

    try:
        main(["monitor", "--json", "--params", str(project / "params.yaml"), "--tracking-uri", uri])
        code = 0
    except SystemExit as done:
        code = done.code
    return code, json.loads(capsys.readouterr().out)


def test_the_served_champion_records_and_only_the_shifted_window_is_flagged(served, capsys):
    project, uri, url = served
    files = val_files(project)
    assert files and Path(files[0]).stat().st_size > 5000  # a real photo, not a generated one
    plain = _post(url, [base64.b64encode(Path(f).read_bytes()).decode() for f in files])
    assert all(row["prediction_id"] for row in plain)
    assert (project / "monitoring" / "predictions.sqlite").is_file()  # the server's cwd
    code, found = _monitor(project, uri, capsys)
    assert (code, found["verdict"], found["version"]) == (0, "ok", "1")

    moved = _post(url, [shifted(f) for f in files])
    assert all(row["prediction_id"] for row in moved)
    code, found = _monitor(project, uri, capsys)
    assert (code, found["verdict"]) == (3, "drift"), found["line"]
