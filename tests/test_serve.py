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
from petsml.testing.fakedata import class_image
from petsml.testing.project import SHARED_SAMPLE
from tests.servers import peak_memory_growth

pytestmark = pytest.mark.integration

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
    from petsml.tracking.model_registry import ModelRegistry
    from petsml.tracking.pyfunc import log_pyfunc_model

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


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """``mlflow models serve`` on the champion, started once for the module; yields its URL."""
    import mlflow

    from petsml.tracking import store

    tmp_path = tmp_path_factory.mktemp("serve")
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    old, previous = os.environ.get("MLFLOW_TRACKING_URI"), mlflow.get_tracking_uri()
    os.environ["MLFLOW_TRACKING_URI"] = uri
    try:
        store.configure(tmp_path)
        _champion(tmp_path, uri)
    finally:
        mlflow.set_tracking_uri(previous)
        if old is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = old

    port = _free_port()
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["MLFLOW_TRACKING_URI"] = uri
    env.pop("PYTHONPATH", None)  # the model brings its own petsml
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
        yield {"url": f"{base}/invocations", "tmp": tmp_path, "pid": server.pid}
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


def _split(column: str, *values: str) -> dict:
    return {"dataframe_split": {"columns": [column], "data": [[v] for v in values]}}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _assert_failed(row: dict) -> None:
    assert row["error"], row
    assert row["label"] is None and row["species"] is None and row["probability"] is None, row
    assert row["top5"] is None, row


def test_served_champion_classifies_a_base64_jpeg(served):
    status, body = _post(served["url"], _split("image", _b64(_jpeg(served["tmp"]).read_bytes())))
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

    # an undecodable image is reported in `error` (null answer), not as a server failure
    status, body = _post(served["url"], _split("image", "bm90IGFuIGltYWdl"))
    assert status == 200, body
    _assert_failed(body["predictions"][0])


def test_served_model_reads_no_server_files_and_hides_which_exist(served):
    photo = _jpeg(served["tmp"])  # a real image on the server's disk
    paths = ["/etc/passwd", str(photo), str(served["tmp"] / "no-such-file.jpg"), "/etc/hostname"]
    status, body = _post(served["url"], _split("image", *paths))
    assert status == 200, body
    rows = body["predictions"]
    assert len(rows) == len(paths)
    for row in rows:
        _assert_failed(row)  # the photo's path is not classified
    assert len({row["error"] for row in rows}) == 1, rows  # existing or not: the same answer
    assert "send the image's bytes base64-encoded" in rows[0]["error"]


def test_served_model_refuses_a_pixel_bomb_in_its_row_only(served):
    from tests.models import bomb_png

    photo = _b64(_jpeg(served["tmp"]).read_bytes())
    bomb_png()  # built before measuring: only the server's memory is under test
    with peak_memory_growth(served["pid"]) as growth:
        status, body = _post(served["url"], _split("image", _b64(bomb_png()), photo))
    assert status == 200, body
    bomb, good = body["predictions"]
    _assert_failed(bomb)
    assert "13000x13000 = 169000000 pixels" in bomb["error"] and "max_pixels" in bomb["error"]
    assert good["error"] == "" and good["label"] in BREEDS
    # decoding the bomb takes 169 MB (8-bit grey) in whichever process serves it, whatever the
    # clock says; the request itself (a 230 KB body, one small JPEG) takes a few MB
    worst = max(growth.values())
    assert worst < 64 * 2**20, f"a server process grew {worst / 2**20:.0f} MB: the bomb was decoded"


def test_unknown_input_column_answers_400_naming_the_accepted_ones(served):
    request = urllib.request.Request(
        served["url"],
        data=json.dumps(_split("path", "cat.jpg")).encode(),
        headers={"Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=60)
    assert caught.value.code == 400
    text = caught.value.read().decode()
    body = json.loads(text)
    assert "column 'image' or 'image_b64'" in body["message"], body
    assert "got columns []" not in text
    assert "stack_trace" not in body and "Traceback" not in text, body
