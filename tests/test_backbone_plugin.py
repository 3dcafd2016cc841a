"""A new backbone family through the registry alone (docs/ARCHITECTURE.md, "Adding a backbone
family"): a toy network from an installed package's entry point is built by the one factory,
extracts features, splits for ``finetune_top`` and round-trips through a saved model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from petsml.data.decode import DecodedImages
from petsml.data.tensors import to_input
from petsml.models import backbones
from petsml.models.backbones import (
    BackboneError,
    BackboneFamily,
    BackboneRequest,
    Preprocessing,
    SequentialBackbone,
    available_backbones,
    create_backbone,
    resolve_backbone,
)
from petsml.models.classifier import Classifier, load_classifier, save_classifier
from petsml.testing.plugins import write_plugin
from petsml.training.features import extract_features
from petsml.training.top_split import split_backbone


class ToyNet(nn.Module):
    """A stand-in for another library's network: three conv stages, each halving the map."""

    def __init__(self, width: int) -> None:
        super().__init__()
        chans = [3, width, 2 * width, 4 * width]
        self.stages = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(chans[i], chans[i + 1], 3, stride=2, padding=1),
                nn.BatchNorm2d(chans[i + 1]),
                nn.ReLU(),
            )
            for i in range(3)
        )


TOY_WIDTHS = {"toynet_s": 4, "toynet_m": 8}


def build_toy(request: BackboneRequest) -> SequentialBackbone:
    net = ToyNet(TOY_WIDTHS[request.model_name])
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
    prep = Preprocessing(request.image_size or 32, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    return SequentialBackbone(list(net.stages), head, prep, request)


TOY_FAMILY = BackboneFamily(
    library="toy",
    label="toy nets",
    names=lambda: list(TOY_WIDTHS),
    build=build_toy,
    prefixes=("toy",),
)


@pytest.fixture
def toy_family(tmp_path, monkeypatch):
    """The toy family as an installed plug-in: an entry point naming it (what `pip install` of
    a package declaring ``petsml.backbone_families`` leaves)."""
    entry = {backbones.ENTRY_POINTS: {"toy": "tests.test_backbone_plugin:TOY_FAMILY"}}
    monkeypatch.syspath_prepend(str(write_plugin(tmp_path / "site", "toy_family", "", entry)))
    backbones.families.cache_clear()
    yield TOY_FAMILY
    monkeypatch.undo()  # uninstalled: the factory forgets it
    backbones.families.cache_clear()
    assert "toy:toynet_s" not in available_backbones()


def test_an_installed_family_is_built_by_the_one_factory(toy_family, tmp_path):
    assert resolve_backbone("toy:toynet_s") == ("toy", "toynet_s")
    assert resolve_backbone("toynet_m") == ("toy", "toynet_m")  # bare names reach it too (last)
    assert {"toy:toynet_s", "toy:toynet_m"} <= set(available_backbones())
    with pytest.raises(BackboneError, match="prefix must be tv: or timm: or toy:"):
        resolve_backbone("keras:toynet_s")
    with pytest.raises(BackboneError, match=r"'toy:toynet_l' is not a known.*toy nets"):
        resolve_backbone("toy:toynet_l")
    clash = BackboneFamily("mine", "mine", list, build_toy, ("tv",))
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(backbones, "BUILT_IN", (*backbones.BUILT_IN, clash))
            backbones.families.cache_clear()
            with pytest.raises(BackboneError, match="tv already names family 'tv'"):
                backbones.families()
    finally:
        backbones.families.cache_clear()

    torch.manual_seed(0)
    backbone = create_backbone("toy:toynet_s", pretrained=False, early_block=-2)
    assert (backbone.library, backbone.resolved_name) == ("toy", "toy:toynet_s")
    assert len(backbone.blocks()) == 3 and backbone.early_index == 1
    assert (backbone.feature_dim, backbone.early_dim) == (16, 8)

    # the frozen feature extraction (featurize) runs it as any other backbone
    rng = np.random.default_rng(0)
    ids = [f"img{i}" for i in range(5)]
    images = DecodedImages(
        rng.integers(0, 256, (5, 40, 40, 3), dtype=np.uint8), {i: n for n, i in enumerate(ids)}
    )
    feats = extract_features(backbone, images, ids, 2, torch.device("cpu"), precision="fp32")
    x = to_input(torch.from_numpy(images.take(ids)), (0.5,) * 3, (0.25,) * 3, size=32)
    with torch.no_grad():
        pen, early = backbone.forward_features(x), backbone.forward_early(x)
    np.testing.assert_allclose(feats.penultimate, pen.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(feats.block(backbone.early_index), early.numpy(), rtol=1e-5,
                               atol=1e-6)  # fmt: skip

    # its family's split_steps lets finetune_top cache the frozen blocks
    split = split_backbone(backbone, unfreeze_blocks=1)
    assert split is not None and len(split.bottom) == 2 and len(split.top) == 1

    # and a saved model rebuilds through the factory from its resolved name
    model = Classifier(backbone, 3).eval()
    save_classifier(model, tmp_path / "model.pt", {"backbone": "toy:toynet_s"})
    loaded, spec = load_classifier(tmp_path / "model.pt")
    assert spec["backbone_resolved"] == "toy:toynet_s"
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
