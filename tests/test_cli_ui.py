"""`pets ui`: a real MLflow UI on loopback, announced with the link to the strategies view."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import psutil
import pytest

from petsml.testing.project import tool_env

pytestmark = [pytest.mark.slow(seconds=35), pytest.mark.integration]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_pets_ui_serves_mlflow_and_prints_the_strategies_link(registered_project):
    project, uri, _ = registered_project  # tracked as the track stage does, then registered
    record = json.loads((project / "reports" / "mlflow_runs.json").read_text())
    port = _free_port()
    ui = subprocess.Popen(
        [sys.executable, "-m", "petsml.cli", "ui", "--port", str(port), "--tracking-uri", uri],
        cwd=project, env=tool_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        first = ui.stdout.readline().strip()
        base = f"http://127.0.0.1:{port}"
        assert first == f"MLflow UI: {base}{record['ui_path']}", first
        assert "workflowType=machine_learning" in first and "viewStateShareKey=" in first
        deadline = time.monotonic() + 120
        while True:
            assert ui.poll() is None, ui.stdout.read()[-3000:]
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2) as response:
                    assert response.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline, "mlflow ui never became healthy"
                time.sleep(0.5)
        # one viewer's server: one MLflow worker, no GenAI job runner (fifteen processes else)
        tree = [" ".join(child.cmdline()) for child in psutil.Process(ui.pid).children(True)]
        assert any("mlflow ui" in c and "--workers 1" in c for c in tree), tree
        assert not any("huey" in c or "job" in c for c in tree), tree
        experiment = record["ui_path"].split("/experiments/")[1].split("/")[0]
        query = f"{base}/ajax-api/2.0/mlflow/experiments/get?experiment_id={experiment}"
        with urllib.request.urlopen(query, timeout=10) as response:
            assert b"strategies" in response.read()  # the shared view the link opens
    finally:
        ui.send_signal(signal.SIGINT)
        try:
            ui.wait(timeout=30)
        except subprocess.TimeoutExpired:
            ui.kill()
    deadline = time.monotonic() + 30  # Ctrl-C takes the whole server down, workers included
    while _listening(port):
        assert time.monotonic() < deadline, f"port {port} still served after pets ui stopped"
        time.sleep(0.5)


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_pets_ui_without_a_store_says_to_run_the_pipeline(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "petsml.cli", "ui", "--tracking-uri",
         f"sqlite:///{tmp_path / 'absent' / 'mlflow.db'}"],
        cwd=tmp_path, env=tool_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1
    assert "no MLflow store yet" in result.stderr and "dvc repro" in result.stderr
