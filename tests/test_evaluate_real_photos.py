"""Evaluate scores what ships: on real photos, its logits are the served model's logits.

The frozen strategies are scored from the featurize stage's one frozen pass: their saved head on
the cached test features. ``model.precision: bf16`` (what ``auto`` picks on CPUs with native
bf16 and on GPUs) applies to the train and validation features only: the test split is always
computed in float32 by the fused network the served model runs (the pyfunc: ``load_rgb`` on the
raw file, ``to_input``, ``model.pt``). Here those logits must equal, photo by photo, what the
shipped model computes from the raw files, quirky ones (an RGBA PNG and a GIF named .jpg,
extreme aspect ratios) included.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

from petsml import paths
from petsml.config import parse_params
from petsml.data.breeds import labels_for
from petsml.data.decode import DecodedImages, decode_images, load_rgb
from petsml.data.feature_file import read_features
from petsml.data.split import load_split
from petsml.data.tensors import to_input
from petsml.evaluation import evaluate
from petsml.models.backbones import create_backbone
from petsml.models.classifier import Classifier, load_classifier, save_classifier
from petsml.testing.fakedata import rows_for_ids
from petsml.testing.project import REPO, SHARED_SAMPLE, apply_overrides
from petsml.training.features import featurize_splits

pytestmark = pytest.mark.integration

FROZEN = ["feature_extractor", "svm_early"]
QUIRKS = ["Abyssinian_5", "Abyssinian_34"]  # an RGBA PNG and a GIF behind .jpg
DECODE = 256
CPU = torch.device("cpu")


def _sample_ids() -> list[str]:
    """The two non-JPEGs, the four most elongated photos and ten of the sample's test list."""
    images = SHARED_SAMPLE / "images"
    test = [line.split()[0] for line in (SHARED_SAMPLE / "annotations/test.txt").open()]
    aspect = {}
    for path in sorted(images.glob("*.jpg")):
        with Image.open(path) as img:
            aspect[path.stem] = img.width / img.height
    by_aspect = sorted(aspect, key=aspect.get)
    chosen = [*QUIRKS, *by_aspect[:2], *by_aspect[-2:], *test[::11][:10]]
    return list(dict.fromkeys(chosen))


def _split_frame(ids: list[str]) -> pd.DataFrame:
    return pd.DataFrame(rows_for_ids(ids, SHARED_SAMPLE))


def _ship_frozen_models(root: Path, ids: list[str]) -> None:
    """Featurize's features (``model.precision: bf16``) and both frozen strategies as train
    ships them."""
    backbone = create_backbone("efficientnet_lite0", pretrained=True, early_block=-3)
    decoded = DecodedImages.open(root / paths.DECODED)
    featurize_splits(backbone, decoded, {"test": ids}, root / paths.FEATURES, 8, CPU, "bf16")
    rng = np.random.default_rng(0)
    classes = list(labels_for("breed"))
    backbone = create_backbone("efficientnet_lite0", pretrained=True, early_block=-3)
    for strategy, feature in (("feature_extractor", "penultimate"), ("svm_early", "early")):
        dim = backbone.feature_dim if feature == "penultimate" else backbone.early_dim
        W, b = rng.normal(0, 0.3, (len(classes), dim)), rng.normal(0, 0.1, len(classes))
        model = Classifier.from_linear(backbone, W, b, feature=feature)
        meta = {
            "strategy": strategy,
            "task": "breed",
            "class_names": classes,
            "decode_size": DECODE,
            "backbone": "efficientnet_lite0",
            "frozen_backbone": True,
        }
        save_classifier(model, root / paths.model_dir(strategy) / "model.pt", meta)


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    if not (SHARED_SAMPLE / "images").is_dir():
        reason = f"real pet photos not present at {SHARED_SAMPLE}; nothing to compare on"
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("real")
    frame = _split_frame(_sample_ids())
    (root / paths.SPLITS).mkdir(parents=True)
    frame.to_csv(root / paths.split_csv("test"), index=False)
    for other in paths.INDEX_SPLITS:  # the frozen strategies' index rows are featurize's
        frame.iloc[:0].to_csv(root / paths.split_csv(other), index=False)
    decode_images(frame, SHARED_SAMPLE, root / paths.DECODED, size=DECODE, workers=1)
    _ship_frozen_models(root, frame["image_id"].tolist())
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    overrides = {
        "model.precision": "bf16",  # train/val features only: the test pass is float32 always
        "model.backbone": "efficientnet_lite0",
        "decode.size": DECODE,
        "train.device": "cpu",
        "train.strategies": FROZEN,
        "features.batch_size": 8,  # several batches
    }
    params = parse_params(apply_overrides(raw, overrides))
    evaluate.evaluate_all(params, root=root, device=CPU)
    test = load_split(root / paths.split_csv("test"), "breed")
    logits = {
        "together": _logits(root, params, test, FROZEN),  # from the one cached pass
        **{s: _logits(root, params, test, [s])[s] for s in FROZEN},  # each model alone
    }
    return root, frame, logits


def _logits(root: Path, params, test: pd.DataFrame, strategies: list[str]) -> dict:
    features = read_features(root / paths.FEATURES, "test")
    results = evaluate.evaluate_strategies(
        strategies, params, test, root=root, features=features, device=CPU
    )
    return {result.strategy: result.logits for result in results}


def _served_logits(model_pt: Path, files: list[Path]) -> np.ndarray:
    """What serving computes: the raw file decoded by load_rgb, to_input, the saved network."""
    model, spec = load_classifier(model_pt)
    prep = model.backbone.preprocessing
    batch = torch.from_numpy(np.stack([load_rgb(f, int(spec["decode_size"])) for f in files]))
    x = to_input(batch, prep.mean, prep.std, size=int(prep.input_size))
    with torch.inference_mode():
        return model(x).float().numpy()


def test_decoded_cache_holds_exactly_what_serving_decodes(shipped):
    root, frame, _ = shipped
    decoded = DecodedImages.open(root / paths.DECODED).take(frame["image_id"].tolist())
    served = np.stack([load_rgb(SHARED_SAMPLE / f, DECODE) for f in frame["file"]])
    np.testing.assert_array_equal(decoded, served)


@pytest.mark.parametrize("strategy", FROZEN)
def test_evaluate_logits_equal_the_shipped_models_on_real_photos(shipped, strategy):
    root, frame, logits = shipped
    files = [SHARED_SAMPLE / f for f in frame["file"]]
    served = _served_logits(root / paths.model_dir(strategy) / "model.pt", files)
    # float32 sums in another order (batches of 8 vs all photos at once, one or two threads):
    # ~1e-5; a preprocessing, weights or precision mismatch moves logits by far more than 1e-4
    np.testing.assert_allclose(logits["together"][strategy], served, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(logits[strategy], served, rtol=1e-4, atol=1e-4)
    # what the stage wrote: the same predictions and confidences
    preds = pd.read_csv(root / evaluate.EVAL_DIR / strategy / "predictions.csv")
    assert preds["image_id"].tolist() == frame["image_id"].tolist()
    assert (preds["pred"].to_numpy() == served.argmax(axis=1)).all()
    # probabilities: logits agree to 1e-4, the CSV keeps 6 decimals
    probs = torch.softmax(torch.from_numpy(served), dim=1).numpy()
    np.testing.assert_allclose(preds["prob"], probs.max(axis=1), atol=1e-5)
    details = json.loads((root / evaluate.EVAL_DIR / strategy / "metrics.json").read_text())
    assert details["logits_from"] == "cached features"
    assert read_features(root / paths.FEATURES, "test").precision == "fp32"


def test_the_served_pyfunc_predicts_what_evaluate_reported(shipped):
    """The MLflow pyfunc itself (not a re-implementation) on the raw files' bytes, as served."""
    import base64

    from petsml.tracking.pyfunc import ARTIFACT, PetClassifierModel

    root, frame, _ = shipped
    preds = pd.read_csv(root / evaluate.EVAL_DIR / "feature_extractor" / "predictions.csv")
    pyfunc = PetClassifierModel()
    model_pt = root / paths.model_dir("feature_extractor") / "model.pt"
    pyfunc.load_context(SimpleNamespace(artifacts={ARTIFACT: str(model_pt)}))
    encoded = [base64.b64encode((SHARED_SAMPLE / f).read_bytes()).decode() for f in frame["file"]]
    served = pyfunc.predict(None, pd.DataFrame({"image": encoded}))
    assert (served["error"] == "").all()
    assert served["label"].tolist() == preds["pred_name"].tolist()
    np.testing.assert_allclose(served["probability"].astype(float), preds["prob"], atol=1e-5)
