"""``pets predict``: every file is answered, failures per file, one exit status for both modes."""

from __future__ import annotations

import json
import os

import pytest

from petsml.data.breeds import BREEDS
from tests.cli import run_pets
from tests.edge import mlflow_uris_restored
from tests.models import make_tiny_model, write_jpeg

pytestmark = pytest.mark.integration

NAME = "oxford-pets-breed"


@pytest.fixture(scope="module")
def champion(tmp_path_factory):
    """A store whose ``oxford-pets-breed@champion`` is the tiny model; yields its URI."""
    import mlflow
    from mlflow import MlflowClient

    from petsml.tracking import store
    from petsml.tracking.pyfunc import log_pyfunc_model

    root = tmp_path_factory.mktemp("cli")
    uri = f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"
    old = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    # both URIs pinned here (an earlier test on this worker may have left a registry URI set,
    # and `pets predict` sets both), and put back for the tests after this module
    try:
        with mlflow_uris_restored():
            store.configure(root)
            mlflow.set_registry_uri(uri)
            experiment_id = store.get_or_create_experiment("pets-cli-test", uri)
            with mlflow.start_run(experiment_id=experiment_id):
                log_pyfunc_model(make_tiny_model(root / "model.pt"), registered_model_name=NAME)
            MlflowClient(uri).set_registered_model_alias(NAME, "champion", "1")
            yield {"uri": uri, "root": root}
    finally:
        if old is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = old


def test_a_missing_file_is_reported_and_the_others_still_answered_with_one_exit_status(
    champion, tmp_path, capsys
):
    good = [str(write_jpeg(tmp_path / f"pet{i}.jpg", class_index=i, seed=i)) for i in range(2)]
    missing = str(tmp_path / "missing.jpg")
    text_file = tmp_path / "notes.jpg"
    text_file.write_text("not an image")
    files = [good[0], missing, str(text_file), good[1]]
    common = ["--model-name", NAME, "--tracking-uri", champion["uri"]]

    code, out, err = run_pets(["predict", *files, "--json", *common], capsys)
    rows = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert [r["file"] for r in rows] == files
    for row in (rows[0], rows[3]):
        assert row["error"] is None and row["label"] in BREEDS
        assert 0.0 < row["probability"] <= 1.0 and len(row["top5"]) == 5
    for row in (rows[1], rows[2]):
        assert row["error"] and row["probability"] is None and row["label"] is None
        assert row["top5"] is None and row["species"] is None
    assert "no such file" in rows[1]["error"] and "not an image" in rows[2]["error"]
    assert code == 1 and "2 of 4 file(s) not classified" in err

    code_text, out, err = run_pets(["predict", *files, *common], capsys)
    assert code_text == code == 1  # the same failures, the same exit status in both modes
    assert f"{missing}: ERROR no such file" in out and f"{text_file}: ERROR" in out
    assert f"{good[0]}: {rows[0]['label']}" in out and f"{good[1]}: {rows[3]['label']}" in out

    for mode in ([], ["--json"]):  # all classified: 0 in both modes
        assert run_pets(["predict", *good, *mode, *common], capsys)[0] == 0


def test_predict_help_documents_the_exit_status(capsys):
    code, out, _ = run_pets(["predict", "--help"], capsys)
    assert code == 0
    assert "exit status (the same with and without --json)" in out
    assert "at least one file not classified" in out and "null" in out


@pytest.mark.parametrize("closed_when", ["before", "after_first_line"])
def test_a_reader_that_stops_reading_ends_predict_quietly(champion, tmp_path, closed_when):
    """`pets predict *.jpg | head -1`: the reader goes away; no BrokenPipeError traceback, exit
    0. "before": the pipe's read end is closed before `pets` writes a byte (every write fails,
    deterministically); "after_first_line": a real `head -1` in a shell pipeline."""
    import subprocess
    import sys

    from petsml.testing.project import tool_env

    photos = [str(write_jpeg(tmp_path / f"pet{i}.jpg", class_index=i, seed=i)) for i in range(3)]
    command = [sys.executable, "-m", "petsml.cli", "predict", *photos, "--tracking-uri",
               champion["uri"]]  # fmt: skip
    if closed_when == "before":
        read_end, write_end = os.pipe()
        os.close(read_end)
        try:
            result = subprocess.run(command, stdout=write_end, stderr=subprocess.PIPE,
                                    env=tool_env(), text=True, timeout=300)  # fmt: skip
        finally:
            os.close(write_end)
    else:
        import shlex

        line = " ".join(map(shlex.quote, command)) + " | head -1; exit ${PIPESTATUS[0]}"
        result = subprocess.run(["bash", "-c", line], capture_output=True, env=tool_env(),
                                text=True, timeout=300)  # fmt: skip
        assert result.stdout.startswith("models:/oxford-pets-breed@champion"), result.stdout
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr, result.stderr
    assert result.returncode == 0, result.stderr
