"""The trained strategies' test data and runner, shared by tests/test_finetune.py and
tests/test_cached_top.py: a tiny random-init timm network on tiny images of 4 breeds. Its
fixtures reach those modules as a plugin of tests/conftest.py (``pytest_plugins``)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from petsml.config import parse_params
from petsml.data.decode import decode_images
from petsml.testing.fakedata import make_dataset, split_rows
from petsml.testing.project import apply_overrides
from petsml.training.finetune import train_strategy

REPO = Path(__file__).resolve().parents[1]
BACKBONE = "test_efficientnet"  # timm's tiny test network: trains in well under a second
NUM_CLASSES = 37  # task breed


class Crash(RuntimeError):
    """Stands in for a killed process after an epoch's checkpoint is on disk."""


def _params(**overrides):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    settings = {
        "model.backbone": BACKBONE,
        "model.pretrained": False,  # no network in tests
        "model.image_size": 32,
        "model.precision": "fp32",  # exact comparisons hold with and without native bf16
        "decode.size": 40,
        "train.device": "cpu",
        "train.epochs": 3,
        "train.batch_size": 8,
        "train.patience": 3,
        "train.warmup_epochs": 1,
        "train.seed": 0,
        "features.batch_size": 64,
    } | overrides
    return parse_params(apply_overrides(raw, settings))


@pytest.fixture
def one_thread():
    """Tiny tensors: threads only add overhead, and they thrash on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data_dirs(tmp_path_factory):
    """Split CSVs and a decoded cache for 4 breeds: 24 train and 8 val images, 40 px."""
    root = tmp_path_factory.mktemp("pets")
    ds = make_dataset(root / "src", per_breed=8, test_per_breed=0, size=(48, 44), quirks=False)
    frame = pd.DataFrame(split_rows(ds))
    is_val = frame["image_id"].str.endswith(("_1", "_2"))
    splits = root / "splits"
    splits.mkdir()
    frame[~is_val].to_csv(splits / "train.csv", index=False)
    frame[is_val].to_csv(splits / "val.csv", index=False)
    decode_images(frame, root / "src", root / "decoded", size=40, workers=1)
    return splits, root / "decoded"


def _run(data_dirs, tmp_path, strategy, params, *, resume=False, on_epoch_end=None, name="out"):
    splits, decoded = data_dirs
    out = tmp_path / name / strategy
    summary = train_strategy(
        strategy,
        params,
        out,
        resume=resume,
        checkpoint_dir=tmp_path / "checkpoints" / strategy,
        splits_dir=splits,
        decoded_dir=decoded,
        on_epoch_end=on_epoch_end,
    )
    return summary, out


def _crash_after(epoch_to_crash: int, seen: list[int]):
    def callback(epoch, model, record):
        seen.append(epoch)
        if epoch == epoch_to_crash:
            raise Crash(f"killed after epoch {epoch}")

    return callback


def _clone(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
