"""``mlflow models serve`` on the registry's champion answers a real JPEG over HTTP."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from petsml.data.breeds import BREEDS
from tests.fakedata import class_image
from tests.project import SHARED_SAMPLE

REPO = Path(__file__).resolve().parents[1]
NAME = "oxford-pets-breed"
BACKBONE = "test_efficientnet"
PING_TIMEOUT_S = 120


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _jpeg(tmp_path: Path) -> Path:
    """A real photo from the shared sample when present, else a generated JPEG."""
    photos = sorted((SHARED_SAMPLE / "images").glob("*.jpg")) if SHARED_SAMPLE.is_dir() else []
    if photos:
        return photos[0]
    path = tmp_path / "pet.jpg"
    class_image(3, np.random.default_rng(0), (120, 90)).save(path, format="JPEG")
    return path


def _champion(tmp_path: Path, uri: str) -> str:
    """Log the tiny real model, register it and make it the champion; returns the version."""
    import mlflow
    import torch

    from petsml.models.backbones import create_backbone
    from petsml.models.classifier import Classifier, save_classifier
    from petsml.tracking import store
    from petsml.tracking.pyfunc import log_pyfunc_model
    from petsml.tracking.registry import ModelRegistry

    torch.manual_seed(0)
    backbone = create_backbone(BACKBONE, pretrained=False, early_block=-3, image_size=32)
    model_pt = tmp_path / "model.pt"
    meta = {
        "strategy": "finetune_top",
        "task": "breed",
        "class_names": list(BREEDS),
        "decode_size": 40,
        "backbone": BACKBONE,
    }
    save_classifier(Classifier(backbone, len(BREEDS), feature="penultimate"), model_pt, meta)
    mlflow.set_tracking_uri(uri)
    experiment_id = store.get_or_create_experiment("pets-serve-test", uri)
    with mlflow.start_run(experiment_id=experiment_id) as run:
        info = log_pyfunc_model(model_pt)
    registry = ModelRegistry(NAME, uri)
    version = registry.register(info.model_uri, run.info.run_id, {"strategy": "finetune_top"})
    registry.promote(version.version, "serve test")
    return version.version


def _post(url: str, payload: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def _wait_for_ping(base: str, server: subprocess.Popen, log_path: Path) -> float:
    started = time.monotonic()
    while time.monotonic() - started < PING_TIMEOUT_S:
        if server.poll() is not None:
            pytest.fail(f"server exited with {server.returncode}:\n{log_path.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(f"{base}/ping", timeout=2) as response:
                if response.status == 200:
                    return time.monotonic() - started
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    pytest.fail(f"no /ping after {PING_TIMEOUT_S}s:\n{log_path.read_text()[-4000:]}")


def test_served_champion_classifies_a_base64_jpeg(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    from petsml.tracking import store

    store.configure(tmp_path)
    _champion(tmp_path, uri)

    port = _free_port()
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["MLFLOW_TRACKING_URI"] = uri
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    log_path = tmp_path / "server.log"
    command = [
        "mlflow", "models", "serve", "-m", f"models:/{NAME}@champion",
        "--env-manager", "local", "-p", str(port), "-h", "127.0.0.1", "-w", "1",
    ]  # fmt: skip
    with open(log_path, "wb") as log_file:
        server = subprocess.Popen(
            command,
            cwd=tmp_path,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the uvicorn child stops with it
        )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_for_ping(base, server, log_path)
        b64 = base64.b64encode(_jpeg(tmp_path).read_bytes()).decode("ascii")
        status, body = _post(
            f"{base}/invocations", {"dataframe_split": {"columns": ["image"], "data": [[b64]]}}
        )
        assert status == 200, body
        rows = body["predictions"]
        assert len(rows) == 1
        row = rows[0]
        assert set(row) == {"label", "species", "probability", "top5", "error"}
        assert row["label"] in BREEDS and row["error"] == ""
        assert row["species"] in ("cat", "dog")
        assert 0.0 < row["probability"] <= 1.0
        top5 = json.loads(row["top5"])
        assert len(top5) == 5 and top5[0]["label"] == row["label"]
        assert all(item["label"] in BREEDS for item in top5)

        # an undecodable image is reported in `error`, not as a server failure
        status, body = _post(
            f"{base}/invocations",
            {"dataframe_split": {"columns": ["image"], "data": [["bm90IGFuIGltYWdl"]]}},
        )
        assert status == 200 and body["predictions"][0]["error"], body
    finally:
        try:
            os.killpg(server.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)
