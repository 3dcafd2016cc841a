"""``pets serve``: the registry's champion behind ``mlflow models serve`` answers a real photo
over loopback, under the project's input limits, and a SIGTERM ends its whole process tree."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from petsml.testing.project import tool_env
from tests.servers import free_port, process_tree, start, stop, wait_http

pytestmark = pytest.mark.integration

MAX_BYTES = 20_000  # the copied params' serve.max_bytes: a large photo is over it


def _post(url: str, *images: bytes) -> tuple[int, list[dict]]:
    payload = {"dataframe_split": {"columns": ["image"], "data": [
        [base64.b64encode(image).decode("ascii")] for image in images]}}  # fmt: skip
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())["predictions"]
    except urllib.error.HTTPError as error:
        return error.code, [json.loads(error.read() or b"{}")]


def _first_line(log: Path, process, timeout_s: float = 120) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        lines = log.read_text().splitlines() if log.exists() else []
        if lines:
            return lines[0]
        if process.poll() is not None:
            break
        time.sleep(0.2)
    pytest.fail(f"pets serve printed nothing:\n{log.read_text()[-4000:]}")


def test_pets_serve_answers_a_photo_under_the_projects_limits_and_stops_its_tree(
    registered_project, tmp_path
):
    project, uri, _ = registered_project
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["serve"]["max_bytes"] = MAX_BYTES
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    photo = project / "data" / "raw" / pd.read_csv(project / "data/splits/val.csv")["file"][0]
    assert photo.stat().st_size < MAX_BYTES
    noise = np.random.default_rng(0).integers(0, 255, (400, 400, 3), dtype=np.uint8)
    large = io.BytesIO()
    Image.fromarray(noise).save(large, format="JPEG", quality=95)
    assert len(large.getvalue()) > MAX_BYTES

    port, log = free_port(), tmp_path / "serve.log"
    command = [sys.executable, "-m", "petsml.cli", "serve", "--port", str(port), "--json",
               "--tracking-uri", uri, "--params", str(tmp_path / "params.yaml")]  # fmt: skip
    env = {k: v for k, v in tool_env().items() if not k.startswith(("MLFLOW_", "PREFECT_"))}
    server = start(command, log, cwd=tmp_path, env=env)
    try:
        started = json.loads(_first_line(log, server))  # --json: one object, then serving
        base = f"http://127.0.0.1:{port}/"
        assert started["url"] == base and started["version"] == "1"
        assert started["model"] == "models:/oxford-pets-breed@champion"
        assert started["limits"]["max_bytes"] == MAX_BYTES
        assert started["curl"].startswith(f"curl -s {base}invocations")
        wait_http(f"{base}ping", server, log, timeout_s=300)

        status, rows = _post(f"{base}invocations", photo.read_bytes(), large.getvalue())
        assert status == 200, rows
        assert rows[0]["error"] == "" and rows[0]["label"] and len(json.loads(rows[0]["top5"])) == 5
        assert rows[1]["label"] is None and f"over the limit of {MAX_BYTES}" in rows[1]["error"]

        tree = process_tree(server.pid)
        assert len(tree) > 1, "mlflow models serve runs under pets serve"
        os.kill(server.pid, signal.SIGTERM)  # pets only: it must take its children down
        assert server.wait(timeout=60) == 128 + signal.SIGTERM
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and [p for p in tree if Path(f"/proc/{p}").exists()]:
            time.sleep(0.2)
        alive = [p for p in tree if Path(f"/proc/{p}").exists()]
        assert not alive, f"left running after pets serve ended: {alive}"
    finally:
        stop(server)
