"""The team setup's MLflow: a real `mlflow server` on 127.0.0.1 with a database backend and
proxied artifacts (``--artifacts-destination``), reached through ``MLFLOW_TRACKING_URI=http://…``.

Once per backend (SQLite, and PostgreSQL where ``initdb``/``pg_ctl`` exist; skipped saying why
where they do not): the `track` and `register` stages go through the server, and three sweep
members log and register at once and all of their runs and versions are there. `pets predict`
and `mlflow models serve` of the champion run once (on the PostgreSQL-backed server when there
is one): they talk to the server's REST API, the same for every backend. Each step is its own
process, as on a team's machines.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from petsml.data.breeds import BREEDS
from tests.models import write_jpeg
from tests.servers import (
    free_port,
    have_postgres,
    mlflow_server,
    postgres,
    server_env,
    start,
    stop,
    wait_http,
)
from tests.tracking import build_project, run_sweep_members

pytestmark = [pytest.mark.slow(seconds=175), pytest.mark.integration]

REPO = Path(__file__).resolve().parents[1]
MEMBERS = 3
SWEEP_NAME = "pets-sweep-breed"
SERVE_BACKEND = "postgresql" if have_postgres() else "sqlite"  # the team's, where it runs


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(request, tmp_path_factory):
    """A tracking server over a fresh database of the given kind; yields (uri, root)."""
    root = tmp_path_factory.mktemp(f"server-{request.param}")
    if request.param == "sqlite":
        with mlflow_server(root, f"sqlite:///{root / 'mlflow.db'}") as uri:
            yield uri, root
    else:
        with postgres() as database, mlflow_server(root, database) as uri:
            yield uri, root


def _run(cwd: Path, uri: str, *args: str) -> subprocess.CompletedProcess:
    env = server_env(MLFLOW_TRACKING_URI=uri, PYTHONPATH=str(REPO))
    result = subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, f"{args} failed:\n{result.stdout[-3000:]}{result.stderr[-4000:]}"
    return result


@pytest.fixture(scope="module")
def tracked(server, tmp_path_factory):
    """The `track` then `register` stages, each its own process, on a project as the pipeline
    leaves it before `track` (tiny models, metrics, splits), logging to the server."""
    uri, _ = server
    project = build_project(tmp_path_factory.mktemp("tracked"))
    _run(project, uri, "-m", "stages.track")
    _run(project, uri, "-m", "stages.register")
    runs = json.loads((project / "reports/mlflow_runs.json").read_text())
    registered = json.loads((project / "reports/registry.json").read_text())
    return project, runs, registered


def test_track_and_register_stages_log_through_the_server(server, tracked):
    from mlflow import MlflowClient

    uri, root = server
    project, runs, registered = tracked
    assert runs["tracking_uri"] == uri
    assert registered["decision"] == "champion" and "champion" in registered["aliases"]
    assert not (project / "mlruns").exists()  # nothing went to a local store
    # artifacts are proxied: the run's URI names the server, the files sit where it keeps them
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    child = client.get_run(runs["children"][registered["strategy"]])
    assert child.info.artifact_uri.startswith("mlflow-artifacts:"), child.info.artifact_uri
    assert any((root / "artifacts").rglob("MLmodel"))
    champion = client.get_model_version_by_alias(registered["model_name"], "champion")
    assert str(champion.version) == str(registered["version"])


def test_pets_predict_and_mlflow_models_serve_answer_from_the_server(
    request, server, tracked, tmp_path
):
    if request.node.callspec.params["server"] != SERVE_BACKEND:
        pytest.skip(f"predict/serve use the server's REST API alike for every backend: run "
                    f"once, on the {SERVE_BACKEND}-backed server")  # fmt: skip
    uri, _ = server
    name = tracked[2]["model_name"]
    photo = write_jpeg(tmp_path / "pet.jpg", class_index=3)
    answer = _run(tmp_path, uri, "-m", "petsml.cli", "predict", str(photo), "--json",
                  "--model-name", name)  # fmt: skip
    row = json.loads(answer.stdout.strip().splitlines()[-1])
    assert row["error"] is None and row["label"] in BREEDS and 0 < row["probability"] <= 1

    port, log = free_port(), tmp_path / "serve.log"
    command = ["mlflow", "models", "serve", "-m", f"models:/{name}@champion", "--env-manager",
               "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"]  # fmt: skip
    served = start(command, log, cwd=tmp_path, env=server_env(MLFLOW_TRACKING_URI=uri))
    try:
        wait_http(f"http://127.0.0.1:{port}/ping", served, log)
        body = {
            "dataframe_split": {
                "columns": ["image"],
                "data": [[base64.b64encode(photo.read_bytes()).decode()]],
            }
        }
        post = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations", data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(post, timeout=60) as response:
            row = json.loads(response.read())["predictions"][0]
    finally:
        stop(served)
    assert row["error"] == "" and row["label"] in BREEDS and 0 < row["probability"] <= 1


def test_concurrent_sweep_members_all_land_on_the_server(server, tmp_path):
    from mlflow import MlflowClient

    uri, _ = server
    assert run_sweep_members(tmp_path, uri, SWEEP_NAME, MEMBERS) == [0] * MEMBERS
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    records = [json.loads((tmp_path / f"member{i}.json").read_text()) for i in range(MEMBERS)]
    experiment = client.get_experiment_by_name("sweep")
    assert len(client.search_runs([experiment.experiment_id])) == 2 * MEMBERS
    versions = {int(v.version): v for v in client.search_model_versions(f"name = '{SWEEP_NAME}'")}
    assert sorted(versions) == list(range(1, MEMBERS + 1))
    for record in records:
        runs, report = record["runs"], record["report"]
        for run_id in [runs["parent_run_id"], *runs["children"].values()]:
            assert client.get_run(run_id).info.status == "FINISHED"
        version = versions[int(report["version"])]
        assert version.run_id == runs["children"]["finetune_top"]
        assert version.tags["gate.decision"] in ("champion", "promoted", "rejected")
    assert int(client.get_model_version_by_alias(SWEEP_NAME, "champion").version) in versions
