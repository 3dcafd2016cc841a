"""The offline backbones' own EfficientNet-Lite: timm's network, without importing timm.

Every variant is compared with timm's ``tf_efficientnet_lite<N>`` carrying the same ImageNet
weights: the same parameter names, the same outputs (exactly), the same intermediate maps; the
fused inference form within float rounding; and building the default imports no timm.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from petsml.catalog.backbones import OFFLINE_BACKBONES
from petsml.models.efficientnet_lite import LiteNet
from petsml.models.offline_weights import create_offline_model, load_offline_weights
from petsml.testing.project import REPO, tool_env

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("name", sorted(OFFLINE_BACKBONES))
def test_lite_net_is_timms_network_with_the_same_weights(name):
    import timm

    spec = OFFLINE_BACKBONES[name]
    reference = timm.create_model(spec.architecture, pretrained=False, num_classes=0).eval()
    load_offline_weights(name, reference)
    ours = create_offline_model(name, pretrained=True).eval()
    assert list(ours.state_dict()) == list(reference.state_dict())  # names and order
    assert [(f["module"], f["num_chs"]) for f in ours.feature_info] == [
        (f["module"], f["num_chs"]) for f in reference.feature_info
    ]
    torch.manual_seed(0)
    x = torch.randn(2, 3, spec.input_size, spec.input_size)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), rtol=0, atol=0)
        final, inter = ours.forward_intermediates(x, indices=[1, 3])
        ref_final, ref_inter = reference.forward_intermediates(x, indices=[1, 3])
        torch.testing.assert_close(final, ref_final, rtol=0, atol=0)
        for mine, theirs in zip(inter, ref_inter, strict=True):
            torch.testing.assert_close(mine, theirs, rtol=0, atol=0)
        (early,) = ours.forward_intermediates(x, [3], intermediates_only=True, stop_early=True)
        torch.testing.assert_close(early, ref_inter[1], rtol=0, atol=0)
        # the inference form: BatchNorm folded into the convolutions, float rounding apart
        fused = ours.fused()
        assert fused.is_fused and not ours.is_fused
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
        torch.testing.assert_close(fused(x), reference(x), rtol=1e-4, atol=1e-4)


def test_fusing_needs_eval_mode_and_random_init_is_timms_scheme():
    net = LiteNet("efficientnet_lite0")
    with pytest.raises(RuntimeError, match="eval"):
        net.train().fuse_()
    conv = net.blocks[1][0].conv_pw  # fan-out normal: std sqrt(2 / (k * k * out))
    assert conv.weight.std().item() == pytest.approx((2 / conv.out_channels) ** 0.5, rel=0.15)
    with pytest.raises(ValueError, match="efficientnet_lite9"):
        LiteNet("efficientnet_lite9")


def test_building_the_default_backbone_imports_no_timm():
    script = (
        "import sys\n"
        "from petsml.models.backbones import create_backbone\n"
        "create_backbone('efficientnet_lite1')\n"
        "print(sorted(m for m in ('timm', 'torchvision') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=tool_env(),
                         capture_output=True, text=True, check=True)  # fmt: skip
    assert out.stdout.strip().splitlines()[-1] == "[]"
