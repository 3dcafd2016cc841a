"""Pretrained weights without a network: a cached file loads, a missing or corrupt one fails at
once naming the file to fetch or delete, and nothing but a refusing loopback host is dialled."""

from __future__ import annotations

import socket

import pytest
import torch

from petsml.models import torchvision_backbones
from petsml.models.backbones import WeightsUnavailableError, create_backbone


@pytest.mark.parametrize("how", ["env", "probe", "download"])
def test_missing_torchvision_weights_fail_fast_and_say_where(monkeypatch, tmp_path, how):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("PETSML_OFFLINE", raising=False)
    if how == "env":
        monkeypatch.setenv("PETSML_OFFLINE", "1")
    else:  # a host that refuses connections: a real network failure, wherever the tests run
        monkeypatch.setattr(
            torchvision_backbones,
            "_torchvision_url",
            lambda w: "http://127.0.0.1:9/" + w.url.split("/")[-1],
        )
    if how == "download":  # skip the probe: the download itself fails and is caught
        monkeypatch.setattr(torchvision_backbones, "unreachable", lambda url: None)
    # fast by construction: offline, nothing is dialled; otherwise only the refusing loopback
    # host is, and its refusal ends the attempt at once (no hub, no timeout waited for)
    dialled: list = []
    real_connect = socket.socket.connect

    def recording_connect(sock, address):
        dialled.append(address)
        return real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", recording_connect)
    with pytest.raises(WeightsUnavailableError) as caught:
        create_backbone("resnet18", pretrained=True)
    monkeypatch.setattr(socket.socket, "connect", real_connect)
    if how == "env":
        assert dialled == []
    else:
        assert dialled and all(address[:2] == ("127.0.0.1", 9) for address in dialled), dialled
    message = str(caught.value)
    expected = tmp_path / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert "'resnet18'" in message and str(expected) in message
    assert "model.pretrained: false" in message and "efficientnet_lite0" in message
    assert not expected.exists()
    assert socket.getdefaulttimeout() is None


def test_corrupt_cached_torchvision_weights_say_delete(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cached = tmp_path / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"half a download")
    with pytest.raises(WeightsUnavailableError, match=r"cannot load .*resnet18-f37072fd.*delete"):
        create_backbone("resnet18", pretrained=True)


def test_cached_torchvision_weights_load_without_network(monkeypatch, tmp_path):
    from torchvision.models import resnet18

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("PETSML_OFFLINE", "1")
    torch.manual_seed(3)
    reference = resnet18().state_dict()
    cached = tmp_path / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    cached.parent.mkdir(parents=True)
    torch.save(reference, cached)
    backbone = create_backbone("resnet18", pretrained=True)
    assert torch.equal(backbone.stages[0][0].weight, reference["conv1.weight"])
    assert torch.equal(backbone.stages[4][1].bn2.running_var, reference["layer4.1.bn2.running_var"])


def test_cached_timm_weights_load_without_network(monkeypatch, tmp_path):
    import timm
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("PETSML_OFFLINE", "1")
    torch.manual_seed(4)
    reference = timm.create_model("test_efficientnet").state_dict()  # with its 1000-way head
    repo = tmp_path / "hf" / "models--timm--test_efficientnet.r160_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    (repo / "snapshots" / ("0" * 40)).mkdir(parents=True)
    torch.save(reference, repo / "snapshots" / ("0" * 40) / "pytorch_model.bin")
    backbone = create_backbone("test_efficientnet", pretrained=True)
    trunk = backbone.model.state_dict()
    assert trunk.keys() == {k for k in reference if not k.startswith("classifier")}
    assert all(torch.equal(trunk[k], reference[k]) for k in trunk)


def test_missing_timm_weights_name_the_hub_cache(monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.delenv("PETSML_OFFLINE", raising=False)
    with pytest.raises(WeightsUnavailableError) as caught:
        create_backbone("timm:test_efficientnet", pretrained=True)
    message = str(caught.value)
    assert "'timm:test_efficientnet'" in message
    assert str(tmp_path / "hf" / "models--timm--test_efficientnet.r160_in1k") in message
