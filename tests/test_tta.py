"""Flip test-time augmentation is a property of the saved model: every consumer agrees.

The model file carries ``tta``; evaluation's inference (one model, and several sharing one
backbone pass), the served pyfunc (with and without similar photos) and a plain ``forward`` must
give the same answers, training must never see it, and a file from before TTA loads as ``none``.
The ONNX export of a flip model is checked in tests/test_export.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from petsml import config
from petsml.data.decode import DecodedImages, load_rgb
from petsml.data.tensors import to_input
from petsml.evaluation.inference import model_logits, shared_trunk_logits
from petsml.models.classifier import (
    TTA,
    Classifier,
    ModelFileError,
    load_classifier,
    save_classifier,
)
from petsml.testing.project import REPO
from tests.models import DECODE_SIZE, make_tiny_model, write_jpeg

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict:
    """A tiny model saved twice (tta none, tta flip), its early-feature sibling and 5 photos."""
    root = tmp_path_factory.mktemp("tta")
    plain = make_tiny_model(root / "plain" / "model.pt")
    model, spec = load_classifier(plain)
    meta = {k: spec[k] for k in ("strategy", "task", "class_names", "decode_size", "backbone")}
    model.tta = "flip"
    save_classifier(model, root / "flip" / "model.pt", meta)
    early = Classifier(model.backbone, len(spec["class_names"]), feature="early", tta="flip")
    save_classifier(early, root / "early" / "model.pt", meta)
    photos = [write_jpeg(root / "photos" / f"{i}.jpg", class_index=i, seed=i) for i in range(5)]
    pixels = np.stack([load_rgb(p, DECODE_SIZE) for p in photos])
    ids = [f"img{i}" for i in range(len(photos))]
    decoded = DecodedImages(pixels, {image_id: row for row, image_id in enumerate(ids)})
    return {"root": root, "photos": photos, "pixels": pixels, "ids": ids, "decoded": decoded}


def _inputs(model: Classifier, pixels: np.ndarray) -> torch.Tensor:
    prep = model.backbone.preprocessing
    batch = torch.from_numpy(pixels.copy())
    return to_input(batch, list(prep.mean), list(prep.std), size=int(prep.input_size))


def test_flip_logits_are_the_mean_of_the_image_and_its_mirror(saved):
    model, spec = load_classifier(saved["root"] / "flip" / "model.pt")
    assert spec["tta"] == "flip" and model.tta == "flip"
    x = _inputs(model, saved["pixels"])
    with torch.inference_mode():
        plain = model.head(model.features(x))
        mirrored = model.head(model.features(torch.flip(x, dims=[3])))
        logits = model(x)
    torch.testing.assert_close(logits, (plain + mirrored) / 2)
    assert not torch.allclose(logits, plain, atol=1e-4)  # the mirror really moved them
    # train mode (training and its validation passes build their own models) never augments
    model.train()
    with torch.no_grad():
        torch.testing.assert_close(model(x), model.head(model.features(x)))
    assert model.views() == TTA["none"]


def test_evaluation_inference_and_the_pyfunc_give_the_saved_model_s_answers(saved):
    from mlflow.pyfunc import PythonModelContext

    from petsml.similar.index import NeighbourIndex
    from petsml.tracking.pyfunc import PetClassifierModel

    root, ids, decoded = saved["root"], saved["ids"], saved["decoded"]
    flip, spec = load_classifier(root / "flip" / "model.pt")
    plain, _ = load_classifier(root / "plain" / "model.pt")
    early, _ = load_classifier(root / "early" / "model.pt")
    with torch.inference_mode():
        expected = flip(_inputs(flip, saved["pixels"])).numpy()
        expected_early = early(_inputs(early, saved["pixels"])).numpy()
        expected_plain = plain(_inputs(plain, saved["pixels"])).numpy()

    alone = model_logits(flip, decoded, ids, batch_size=2, device=CPU)
    np.testing.assert_allclose(alone, expected, rtol=1e-5, atol=1e-5)
    # one backbone pass per view serves models with and without TTA, on either feature
    shared = shared_trunk_logits([plain, flip, early], decoded, ids, batch_size=3, device=CPU)
    for got, want in zip(shared, [expected_plain, expected, expected_early], strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)

    index = root / "index.npz"
    vectors = np.random.default_rng(0).normal(size=(4, flip.backbone.feature_dim))
    NeighbourIndex.build(vectors, ["a", "b", "c", "d"], ["x"] * 4, ["f"] * 4).save(index)
    served = PetClassifierModel()
    served.load_context(PythonModelContext(
        artifacts={"model": str(root / "flip" / "model.pt"), "neighbours": str(index)},
        model_config={"allow_paths": True},
    ))  # fmt: skip
    frame = {"image": [str(p) for p in saved["photos"]]}
    import pandas as pd

    want = torch.softmax(torch.from_numpy(expected), dim=1).numpy()
    for params in ({"neighbours": 0}, {"neighbours": 2}):  # the similar-photos path too
        out = served.predict(None, pd.DataFrame(frame), params=params)
        assert (out["error"] == "").all(), out["error"].tolist()
        for row, probs in zip(out.itertuples(), want, strict=True):
            assert row.label == spec["class_names"][int(probs.argmax())]
            top = json.loads(row.top5)
            names = [spec["class_names"][i] for i in np.argsort(-probs, kind="stable")[:5]]
            assert [t["label"] for t in top] == names
            np.testing.assert_allclose([t["probability"] for t in top],
                                       np.sort(probs)[::-1][:5], rtol=1e-5, atol=1e-6)  # fmt: skip


def test_a_model_file_from_before_tta_loads_as_none(saved, tmp_path):
    blob = torch.load(saved["root"] / "plain" / "model.pt", weights_only=True)
    spec = {k: v for k, v in blob["spec"].items() if k != "tta"}
    old = tmp_path / "old.pt"
    torch.save({"spec": {**spec, "format_version": 1}, "state_dict": blob["state_dict"]}, old)
    model, loaded = load_classifier(old)
    assert model.tta == "none" and loaded["tta"] == "none"

    for bad, message in (({"tta": "five_crop"}, "spec tta 'five_crop'"),
                         ({"format_version": 99}, "format 99 is newer")):  # fmt: skip
        path = tmp_path / "bad.pt"
        torch.save({"spec": {**spec, **bad}, "state_dict": blob["state_dict"]}, path)
        with pytest.raises(ModelFileError, match=message):
            load_classifier(path)
    with pytest.raises(ValueError, match="tta must be one of"):
        model.tta = "mirror"


def test_params_key_train_tta_is_validated_and_names_the_registry_s_modes():
    assert all(views[0] == "identity" for views in TTA.values())  # the embedding's view
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    assert config.parse_params(raw).train.tta == "none"
    raw["train"]["tta"] = "mirror"
    with pytest.raises(config.ConfigError, match=r"train\.tta"):
        config.parse_params(raw)


def test_dvc_re_runs_train_and_every_model_reader_when_train_tta_changes():
    """The one reader of train.tta is the train stage; the stages that load a model read it
    from models/ (the folder train rewrites), so none can be stale and called up to date."""
    from dvc.repo import Repo

    with Repo(str(REPO)) as repo:
        stages = {s.addressing: s for s in repo.index.stages}
    readers = {name for name, s in stages.items() for p in s.params if "train.tta" in p.params}
    assert readers == {name for name in stages if name.startswith("train@")} != set()
    for name in ("evaluate", "compare", "track"):
        assert "models" in [str(d.def_path) for d in stages[name].deps], name
