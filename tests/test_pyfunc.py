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

import numpy as np
import pandas as pd
import pytest
import torch

from petsml.data.breeds import BREEDS, SPECIES, species_of
from petsml.data.decode import load_rgb
from petsml.data.tensors import to_input
from tests.fakedata import class_image

REPO = Path(__file__).resolve().parents[1]
BACKBONE = "test_efficientnet"  # timm's tiny test network, random init (no download)
INPUT_SIZE = 32
DECODE_SIZE = 40


def make_tiny_model(
    path: Path, strategy: str = "feature_extractor", task: str = "breed", seed: int = 0
) -> Path:
    """Save a tiny random-init Classifier with the model.pt contract; returns ``path``."""
    from petsml.models.backbones import create_backbone
    from petsml.models.classifier import Classifier, save_classifier

    class_names = list(BREEDS if task == "breed" else SPECIES)
    torch.manual_seed(seed)
    backbone = create_backbone(BACKBONE, pretrained=False, early_block=-3, image_size=INPUT_SIZE)
    model = Classifier(backbone, len(class_names), feature="penultimate")
    with torch.no_grad():  # spread the logits so top-k orderings are not ties
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "strategy": strategy,
        "task": task,
        "class_names": class_names,
        "decode_size": DECODE_SIZE,
        "backbone": BACKBONE,
    }
    save_classifier(model.eval(), path, meta)
    return path


def write_jpeg(path: Path, class_index: int = 3, seed: int = 0, size=(70, 52)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    class_image(class_index, np.random.default_rng(seed), size).save(path, format="JPEG")
    return path


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
results = {}
for uri in sys.argv[2:]:
    loaded = mlflow.pyfunc.load_model(uri)
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


def _predict_in_subprocess(logged, model_uris: list[str], frames: dict) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", LOAD_AND_PREDICT, json.dumps(frames), *model_uris],
        cwd=logged["root"],
        env=tool_env(logged["uri"]),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    line = next(x for x in result.stdout.splitlines() if x.startswith("RESULT"))
    return json.loads(line[len("RESULT") :])


def _check_row(row: dict, class_names) -> None:
    assert row["error"] == ""
    assert row["label"] in class_names
    assert 0.0 <= row["probability"] <= 1.0
    top = json.loads(row["top5"])
    assert len(top) == min(5, len(class_names))
    assert top[0]["label"] == row["label"]
    assert top[0]["probability"] == pytest.approx(row["probability"])
    probs = [t["probability"] for t in top]
    assert probs == sorted(probs, reverse=True)
    assert all(0.0 <= p <= 1.0 for p in probs) and sum(probs) <= 1.0 + 1e-6
    assert len({t["label"] for t in top}) == len(top)


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
    for name in ("torch", "timm", "pillow", "pandas", "pets-pipeline"):
        assert f"{name}==" in requirements, requirements
    assert (local / "artifacts" / "model.pt").read_bytes() == logged["model_pt"].read_bytes()
    example = json.loads((local / "input_example.json").read_text())
    encoded = example["data"][0][0]
    assert base64.b64decode(encoded)[:2] == b"\xff\xd8"  # a real JPEG, base64-encoded


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
    results = _predict_in_subprocess(logged, uris, frames)
    assert set(results) == set(uris)
    for out in results.values():
        mixed = out["mixed"]
        assert len(mixed) == 4
        _check_row(mixed[0], BREEDS)
        _check_row(mixed[1], BREEDS)
        # the same bytes as a path and as base64 give the same answer
        assert mixed[0]["label"] == mixed[1]["label"]
        assert mixed[0]["probability"] == pytest.approx(mixed[1]["probability"], abs=1e-6)
        assert mixed[0]["species"] == species_of(mixed[0]["label"])
        for bad in mixed[2:]:
            assert bad["error"] and bad["label"] == "" and bad["top5"] == "[]"
        b64_rows = out["b64_column"]
        _check_row(b64_rows[0], BREEDS)
        assert b64_rows[0]["label"] == mixed[0]["label"]
        assert b64_rows[1]["error"]
        _check_row(out["example"][0], BREEDS)
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
    model.load_context(PythonModelContext(artifacts={"model": str(model_pt)}, model_config={}))
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
    with pytest.raises(ValueError, match="column 'image'"):
        model.predict(None, pd.DataFrame({"path": ["x"]}))
