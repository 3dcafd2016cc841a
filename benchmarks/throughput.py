"""Throughput: the tutorial data path against the project's, same photos, same model, one run.

Naive = what tutorials do: per-sample PIL decode + torchvision transforms in a DataLoader, the
default (NCHW) memory format, every layer run every epoch. Project = images decoded once into the
uint8 cache, batched tensor preprocessing, channels_last, inference_mode, and for
``finetune_top`` the frozen blocks run once per image (petsml.training.cached_top). Prints
images/s for (a) frozen feature extraction and (b) ``finetune_top`` epochs, the model-only
ceiling, validation accuracy after the same epochs, peak memory, and a final ``speedup: <x>``
line (project over naive, finetune_top, the project's one-off frozen pass included). A
"naive + channels_last" line shows how much of the gain is the memory format alone.

    python benchmarks/throughput.py [FOLDER]   # default ../shared/pets-sample
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from naive import naive_loader

from petsml.config import load_params
from petsml.data.breeds import CLASS_ID, breed_of
from petsml.data.decode import DecodedImages, decode_images
from petsml.data.tensors import batches, to_input
from petsml.models.backbones import create_backbone
from petsml.models.classifier import Classifier
from petsml.training.cached_top import (
    TopModel,
    build_cache,
    split_backbone,
    train_epoch,
)
from petsml.training.features import extract_features
from petsml.training.loop import set_train_mode
from petsml.training.param_groups import build_param_groups

ROOT = Path(__file__).resolve().parents[1]


def timed(fn) -> tuple[float, object]:
    started = time.perf_counter()
    out = fn()
    return time.perf_counter() - started, out


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", nargs="?", default=str(ROOT.parent / "shared" / "pets-sample"))
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(0)
    params = load_params(ROOT / "params.yaml")
    folder = Path(args.folder)
    files = sorted(p for p in (folder / "images").glob("*.jpg"))
    frame = pd.DataFrame(
        {"file": [f"images/{p.name}" for p in files], "image_id": [p.stem for p in files]}
    )
    frame["label"] = frame.image_id.map(lambda i: CLASS_ID[breed_of(i)])
    rng = np.random.default_rng(0)
    frame["val"] = rng.random(len(frame)) < 0.25
    train, val = frame[~frame.val], frame[frame.val]
    print(
        f"{len(frame)} photos from {folder} ({len(train)} train / {len(val)} val), "
        f"{torch.get_num_threads()} threads, backbone {params.model.backbone}"
    )

    backbone = create_backbone(params.model.backbone, pretrained=True)
    prep = backbone.preprocessing
    backbone = backbone.eval().to(memory_format=torch.channels_last)

    def naive_loader_for(rows: pd.DataFrame, train: bool):
        files = [folder / f for f in rows.file]
        return naive_loader(
            files, rows.label.tolist(), prep, train=train, batch_size=args.batch_size,
            workers=args.workers,
        )  # fmt: skip

    # (a) feature extraction.
    feature_loader = naive_loader_for(frame, train=False)

    def naive_features():
        with torch.inference_mode():
            return [backbone.forward_features(xb) for xb, _ in feature_loader]

    naive_secs, _ = timed(naive_features)
    with tempfile.TemporaryDirectory() as tmp:
        decode_secs, _ = timed(
            lambda: decode_images(
                frame, folder, Path(tmp) / "dec", params.decode.size, args.workers
            )
        )
        cache = DecodedImages.open(Path(tmp) / "dec")
        arrays = cache.take(frame.image_id)

        # What stages/featurize.py runs: read-ahead batches, penultimate + early features.
        project_secs, _ = timed(
            lambda: extract_features(
                backbone, cache, frame.image_id.tolist(), args.batch_size, torch.device("cpu")
            )
        )
        train_arr, val_arr = cache.take(train.image_id), cache.take(val.image_id)

    # Model-only ceiling: one real, already prepared batch run again and again (no data path),
    # measured after the project's pass so both see the same warm caches.
    x = to_input(torch.from_numpy(arrays[: args.batch_size]), prep.mean, prep.std,
                 size=prep.input_size)  # fmt: skip
    reps = max(4, len(frame) // args.batch_size)  # as many batches as the real pass
    with torch.inference_mode():
        for _ in range(2):
            backbone.forward_features(x)
        secs, _ = timed(lambda: [backbone.forward_features(x) for _ in range(reps)])
    model_only = reps * len(x) / secs

    n = len(frame)
    print("\n(a) frozen feature extraction")
    print(f"  model only          {model_only:8.1f} images/s")
    print(f"  naive               {n / naive_secs:8.1f} images/s")
    print(
        f"  project             {n / project_secs:8.1f} images/s "
        f"({n / project_secs / model_only:.0%} of model-only; decode once {decode_secs:.1f}s)"
    )

    # (b) finetune_top epochs.
    def make_model(memory_format=torch.channels_last):
        torch.manual_seed(0)
        net = Classifier(create_backbone(params.model.backbone, pretrained=True), 37)
        groups = build_param_groups("finetune_top", net, params)
        opt = torch.optim.AdamW(groups.param_groups)
        return net.to(memory_format=memory_format), opt, groups.frozen_blocks

    def accuracy(net) -> float:
        net.eval()
        with torch.inference_mode():
            preds = [
                net(to_input(xb, prep.mean, prep.std, size=prep.input_size)).argmax(1)
                for xb, _ in batches(val_arr, val.label.to_numpy(), 64)
            ]
        return float((torch.cat(preds).numpy() == val.label.to_numpy()).mean())

    loader = naive_loader_for(train, train=True)

    def naive_epochs(net, opt, frozen, epochs, memory_format):
        for _ in range(epochs):
            set_train_mode(net, frozen)
            for xb, yb in loader:
                loss = F.cross_entropy(net(xb.contiguous(memory_format=memory_format)), yb)
                opt.zero_grad()
                loss.backward()
                opt.step()

    seen_epoch = len(loader) * args.batch_size  # drop_last: images trained per epoch
    nchw = torch.contiguous_format
    net, opt, frozen = make_model(nchw)
    naive_ft_secs, _ = timed(lambda: naive_epochs(net, opt, frozen, args.epochs, nchw))
    naive_acc = accuracy(net)
    # The memory format alone, one epoch (speed only).
    net, opt, frozen = make_model()
    cl_secs, _ = timed(lambda: naive_epochs(net, opt, frozen, 1, torch.channels_last))

    net, opt, frozen = make_model()
    split = split_backbone(net.backbone, params.finetune_top.unfreeze_blocks)
    set_train_mode(net, frozen)
    # The project's finetune_top path: the frozen blocks run once per image on the whole decoded
    # image, then each epoch trains only the top blocks and the head on shifted (and flipped)
    # windows of the cached maps, as stages/train.py does.
    cache_secs, cache = timed(
        lambda: build_cache(
            split, train_arr, train.label.to_numpy(), prep, torch.device("cpu"), shifts=True,
            flip=params.finetune_top.cache_flip,
        )
    )  # fmt: skip
    top = TopModel(split, net.head)

    def project_epochs():
        for epoch in range(args.epochs):
            set_train_mode(net, frozen)
            train_epoch(top, cache, opt, None, torch.device("cpu"), args.batch_size, seed=epoch)

    epoch_secs, _ = timed(project_epochs)
    project_acc = accuracy(net)
    seen = seen_epoch * args.epochs
    naive_ips = seen / naive_ft_secs
    project_ips = seen / (cache_secs + epoch_secs)
    print(f"\n(b) finetune_top, {args.epochs} epochs of {seen_epoch} images")
    print(f"  naive (tutorial)    {naive_ips:8.1f} images/s  val accuracy {naive_acc:.3f}")
    print(f"  naive+channels_last {seen_epoch / cl_secs:8.1f} images/s  (1 epoch, speed only)")
    print(
        f"  project             {project_ips:8.1f} images/s  val accuracy {project_acc:.3f}  "
        f"(frozen pass once {cache_secs:.1f}s, then {seen / epoch_secs:.1f} images/s per epoch)"
    )
    print(f"\npeak memory (RSS): {peak_rss_mb():.0f} MiB")
    print(f"speedup: {project_ips / naive_ips:.2f}")


if __name__ == "__main__":
    main()
