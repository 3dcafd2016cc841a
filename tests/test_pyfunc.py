"""The served model: logged to a real MLflow store, loaded back in a fresh process, predicting.

A tiny random-init timm network stands in for the trained one; what is checked is the serving
contract (input forms, output columns, per-row errors) and that serving decodes images exactly
as the training code does.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from petsml.data.breeds import BREEDS, SPECIES, species_of
from petsml.data.decode import load_rgb
from petsml.data.tensors import to_input
from petsml.errors import PetsError
from petsml.testing.project import shipped_section
from tests.models import bomb_png, check_row, make_tiny_model, sample_photo, write_jpeg
from tests.serving import clean_site, isolated_predict, model_requirements, requirement_closure

pytestmark = [pytest.mark.slow(seconds=30), pytest.mark.integration]  # logs real MLflow models

REPO = Path(__file__).resolve().parents[1]


def reference_prediction(model_pt: Path, image: Path) -> tuple[str, float]:
    """What the training-side code says for one file: load_rgb -> to_input -> softmax."""
    from petsml.models.classifier import load_classifier

    model, spec = load_classifier(model_pt, map_location="cpu")
    prep = model.backbone.preprocessing
    batch = torch.from_numpy(load_rgb(image, spec["decode_size"])[None].copy())
    x = to_input(batch, prep.mean, prep.std, size=prep.input_size)
    with torch.inference_mode():
        probs = torch.softmax(model.eval()(x), dim=1)[0]
    best = int(probs.argmax())
    return spec["class_names"][best], float(probs[best])


def tool_env(uri: str) -> dict[str, str]:
    env = dict(os.environ)
    env["MLFLOW_TRACKING_URI"] = uri
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    return env


# Runs in a fresh interpreter: nothing of the logging process (imports, class objects) is there.
LOAD_AND_PREDICT = r"""
import json, sys
import mlflow, pandas as pd
frames = {name: pd.DataFrame(cols) for name, cols in json.loads(sys.argv[1]).items()}
config = json.loads(sys.argv[2])
results = {}
for uri in sys.argv[3:]:
    loaded = mlflow.pyfunc.load_model(uri, model_config=config)
    example = loaded.input_example
    out = {name: loaded.predict(frame).to_dict(orient="records") for name, frame in frames.items()}
    out["example"] = loaded.predict(example).to_dict(orient="records")
    out["example_columns"] = list(example.columns)
    out["input_names"] = loaded.metadata.get_input_schema().input_names()
    results[uri] = out
print("RESULT" + json.dumps(results))
"""


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    import mlflow
    from mlflow import MlflowClient

    from petsml.tracking import store
    from petsml.tracking.pyfunc import log_pyfunc_model

    root = tmp_path_factory.mktemp("pyfunc")
    uri = f"sqlite:///{root / 'store' / 'mlflow.db'}"
    old = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    try:
        model_pt = make_tiny_model(root / "models" / "feature_extractor" / "model.pt")
        image = write_jpeg(root / "Bengal_1.jpg")
        assert store.configure(root) == uri
        experiment_id = store.get_or_create_experiment("pyfunc-test", uri)
        with mlflow.start_run(experiment_id=experiment_id) as run:
            info = log_pyfunc_model(model_pt, input_example_image=image)
        client = MlflowClient(tracking_uri=uri)
        yield {
            "uri": uri,
            "root": root,
            "model_pt": model_pt,
            "image": image,
            "run_id": run.info.run_id,
            "model_id": info.model_id,
            "client": client,
        }
    finally:
        if old is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = old


def _predict_in_subprocess(logged, model_uris: list[str], frames: dict, config=None) -> dict:
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            LOAD_AND_PREDICT,
            json.dumps(frames),
            json.dumps(config or {}),
            *model_uris,
        ],  # fmt: skip
        cwd=logged["root"],
        env=tool_env(logged["uri"]),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    line = next(x for x in result.stdout.splitlines() if x.startswith("RESULT"))
    return json.loads(line[len("RESULT") :])


def test_logged_model_is_recorded_in_the_run(logged):
    client = logged["client"]
    run = client.get_run(logged["run_id"])
    assert [o.model_id for o in run.outputs.model_outputs] == [logged["model_id"]]
    model = client.get_logged_model(logged["model_id"])
    assert model.source_run_id == logged["run_id"]
    assert model.name == "model"
    # the default artifact root of the SQLite store: artifacts/ beside the database
    assert model.artifact_location.startswith((logged["root"] / "store" / "artifacts").as_uri())
    import mlflow

    local = Path(mlflow.artifacts.download_artifacts(f"models:/{logged['model_id']}"))
    requirements = (local / "requirements.txt").read_text()
    for name in ("torch", "timm", "pillow", "pandas"):
        assert f"{name}==" in requirements, requirements
    # the project is no requirement (it is on no index): its code travels inside the model
    assert "pets-pipeline" not in requirements
    assert (local / "code" / "petsml" / "tracking" / "pyfunc.py").is_file()
    assert not list((local / "code").rglob("__pycache__"))
    assert (local / "artifacts" / "model.pt").read_bytes() == logged["model_pt"].read_bytes()
    example = json.loads((local / "input_example.json").read_text())
    encoded = example["data"][0][0]
    assert base64.b64decode(encoded)[:2] == b"\xff\xd8"  # a real JPEG, base64-encoded


@pytest.mark.integration
def test_fresh_process_predicts_paths_base64_and_flags_garbage(logged):
    image = logged["image"]
    b64 = base64.b64encode(image.read_bytes()).decode()
    frames = {
        "mixed": {
            "image": [str(image), b64, "certainly not an image", str(logged["root"] / "nope.jpg")]
        },
        "b64_column": {"image_b64": [f"data:image/jpeg;base64,{b64}", "!!!notbase64"]},
    }
    uris = [f"models:/{logged['model_id']}", f"runs:/{logged['run_id']}/model"]
    results = _predict_in_subprocess(logged, uris, frames, {"allow_paths": True})
    assert set(results) == set(uris)
    for out in results.values():
        mixed = out["mixed"]
        assert len(mixed) == 4
        check_row(mixed[0], BREEDS)
        check_row(mixed[1], BREEDS)
        # the same bytes as a path and as base64 give the same answer
        assert mixed[0]["label"] == mixed[1]["label"]
        assert mixed[0]["probability"] == pytest.approx(mixed[1]["probability"], abs=1e-6)
        assert mixed[0]["species"] == species_of(mixed[0]["label"])
        for bad in mixed[2:]:
            assert bad["error"] and bad["label"] is None and bad["top5"] is None
            assert bad["probability"] is None
        b64_rows = out["b64_column"]
        check_row(b64_rows[0], BREEDS)
        assert b64_rows[0]["label"] == mixed[0]["label"]
        assert b64_rows[1]["error"]
        check_row(out["example"][0], BREEDS)
        assert out["example_columns"] == ["image"]
        assert "image" in out["input_names"]

    # serving decodes exactly like training: same class and probability as the reference path
    label, probability = reference_prediction(logged["model_pt"], image)
    assert mixed[0]["label"] == label
    assert mixed[0]["probability"] == pytest.approx(probability, abs=1e-5)


def test_species_task_and_undecodable_bytes_in_process(tmp_path):
    from mlflow.pyfunc import PythonModelContext

    from petsml.tracking.pyfunc import PetClassifierModel

    model_pt = make_tiny_model(tmp_path / "model.pt", task="species", seed=1)
    model = PetClassifierModel()
    config = {"allow_paths": True}
    model.load_context(PythonModelContext(artifacts={"model": str(model_pt)}, model_config=config))
    image = write_jpeg(tmp_path / "pug_1.jpg", class_index=25)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(image.read_bytes()[:200])
    frame = pd.DataFrame({"image": [str(image), str(truncated), None]})
    out = model.predict(None, frame)
    assert list(out.columns) == ["label", "species", "probability", "top5", "error"]
    assert out.loc[0, "error"] == "" and out.loc[0, "label"] in SPECIES
    assert out.loc[0, "species"] == out.loc[0, "label"]  # species task: the label is the species
    assert len(json.loads(out.loc[0, "top5"])) == 2
    assert out.loc[1, "error"] and out.loc[2, "error"]
    # more rows than one batch, errors scattered: every row keeps its own answer
    many = [str(image) if i % 3 else "bad" for i in range(37)]
    out = model.predict(None, pd.DataFrame({"image": many}))
    assert len(out) == 37
    assert [bool(e) for e in out["error"]] == [i % 3 == 0 for i in range(37)]
    assert set(out.loc[out["error"] == "", "label"]) == {out.loc[1, "label"]}
    with pytest.raises(PetsError, match="column 'image' or 'image_b64'.*got \\['path'\\]"):
        model.predict(None, pd.DataFrame({"path": ["x"]}))


def _in_process_model(model_pt: Path, **config):
    from mlflow.pyfunc import PythonModelContext

    from petsml.tracking.pyfunc import PetClassifierModel

    model = PetClassifierModel()
    model.load_context(PythonModelContext(artifacts={"model": str(model_pt)}, model_config=config))
    return model


def test_paths_are_read_only_when_opted_in_and_a_refusal_hides_whether_the_file_exists(
    tmp_path, tiny_model
):
    model_pt = tiny_model
    image = write_jpeg(tmp_path / "Bengal_1.jpg")
    paths = ["/etc/passwd", str(image), str(tmp_path / "missing.jpg"), str(tmp_path)]
    served = _in_process_model(model_pt).predict(None, pd.DataFrame({"image": paths}))
    # default (as served): no file is opened, so every path gets the same answer
    assert served["label"].isna().all() and served["probability"].isna().all()
    assert served["error"].nunique() == 1, list(served["error"])
    assert "reads no files" in served.loc[0, "error"]
    local = _in_process_model(model_pt, allow_paths=True).predict(
        None, pd.DataFrame({"image": paths})
    )
    assert local.loc[1, "error"] == "" and local.loc[1, "label"] in BREEDS
    assert local.loc[0, "error"] and local.loc[2, "error"]  # not images / not there


def test_oversized_images_are_refused_per_row_before_decoding(tmp_path, tiny_model, monkeypatch):
    from PIL import ImageFile

    model_pt = tiny_model
    image = write_jpeg(tmp_path / "Bengal_1.jpg", size=(70, 52))
    b64 = base64.b64encode(image.read_bytes()).decode()
    bomb = base64.b64encode(bomb_png()).decode()
    model = _in_process_model(model_pt)
    decoded: list[tuple[int, int]] = []  # every image PIL decodes (load() runs the decoder)
    real_load = ImageFile.ImageFile.load

    def recording_load(self):
        decoded.append(self.size)
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", recording_load)
    out = model.predict(None, pd.DataFrame({"image": [bomb, b64]}))
    monkeypatch.undo()
    assert "13000x13000 = 169000000 pixels" in out.loc[0, "error"]
    assert "max_pixels" in out.loc[0, "error"] and out.loc[0, "probability"] is None
    assert out.loc[1, "error"] == "" and out.loc[1, "label"] in BREEDS  # the other row answered
    assert decoded, "the photo was not decoded through PIL"  # the spy sees decoding...
    assert (13000, 13000) not in decoded, "the bomb was decoded"  # ...the bomb never got there
    # both limits come from model_config
    small = _in_process_model(model_pt, max_pixels=70 * 52 - 1, max_bytes=10**6, allow_paths=True)
    out = small.predict(None, pd.DataFrame({"image": [b64, str(image)]}))
    assert all("70x52 = 3640 pixels, over the limit of 3639" in e for e in out["error"])
    tiny = _in_process_model(model_pt, max_bytes=100, allow_paths=True)
    out = tiny.predict(None, pd.DataFrame({"image": [b64, str(image)]}))
    assert "over the limit of 100 (model_config max_bytes)" in out.loc[0, "error"]
    assert f"file {image} is {image.stat().st_size} bytes" in out.loc[1, "error"]


@pytest.mark.integration
def test_model_loads_and_predicts_where_the_project_is_not_installed(logged, tmp_path):
    from importlib import metadata

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    uri = f"models:/{logged['model_id']}"
    pinned = model_requirements(uri)
    for name in pinned:  # each installed from an index, none a local checkout
        direct = metadata.distribution(name).read_text("direct_url.json")
        assert direct is None or '"dir_info"' not in direct, (name, direct)
    allowed = requirement_closure(pinned)
    assert "pets-pipeline" not in allowed
    site = clean_site(allowed, tmp_path / "site-packages")
    out = isolated_predict(uri, sample_photo(tmp_path), elsewhere, logged["uri"], site)
    check_row(out["row"], BREEDS)
    assert "/code/petsml/" in out["petsml"], out["petsml"]  # the model's own copy


def test_model_card_states_the_served_input_contract():
    from petsml.tracking.model_card import CardInputs, build_model_card

    serve = shipped_section("serve")
    limits = {"max_pixels": serve.max_pixels, "max_bytes": serve.max_bytes}
    card = build_model_card(
        CardInputs(
            "oxford-pets-breed", "1", "breed", "finetune_top", "run", metrics={}, limits=limits
        )  # fmt: skip
    )
    intended = card.split("## Intended use")[1].split("## Limits")[0]
    assert "base64-encoded" in intended and "reads no files" in intended
    assert "40,000,000 pixels" in intended and "max_pixels" in intended


def test_served_input_limit_defaults_are_params_yaml_serve_defaults():
    from petsml.config import load_params
    from petsml.tracking import pyfunc

    assert (pyfunc.MAX_PIXELS, pyfunc.MAX_BYTES) == (
        shipped_section("serve").max_pixels,
        shipped_section("serve").max_bytes,
    )
    serve = load_params(REPO / "params.yaml").serve
    assert (serve.max_pixels, serve.max_bytes) == (pyfunc.MAX_PIXELS, pyfunc.MAX_BYTES)
