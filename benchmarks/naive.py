"""The tutorial data path both benchmarks compare against: one PIL image per ``__getitem__``."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2


class NaiveImages(Dataset):
    """What tutorials do: open, convert, transform one PIL image per ``__getitem__``."""

    def __init__(self, files: list[Path], labels: list[int], transform) -> None:
        self.files, self.labels, self.transform = files, labels, transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        with Image.open(self.files[i]) as img:
            return self.transform(img.convert("RGB")), self.labels[i]


def naive_transforms(prep, train: bool):
    norm = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(prep.mean, prep.std)]
    if train:
        return v2.Compose(
            [
                v2.RandomResizedCrop(prep.input_size, scale=(0.35, 1.0)),
                v2.RandomHorizontalFlip(),
                *norm,
            ]
        )
    return v2.Compose(
        [v2.Resize(round(prep.input_size / 0.875)), v2.CenterCrop(prep.input_size), *norm]
    )


def naive_loader(
    files: list[Path],
    labels: list[int],
    prep,
    *,
    train: bool,
    batch_size: int,
    workers: int,
    **options,
) -> DataLoader:
    """The tutorial DataLoader: training shuffles, augments and drops the short last batch."""
    dataset = NaiveImages(files, labels, naive_transforms(prep, train=train))
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=train, num_workers=workers, drop_last=train,
        **options,
    )  # fmt: skip
