"""Throughput: the tutorial data path against the project's, same photos, same model, one run.

Naive = what tutorials do: per-sample PIL decode + torchvision transforms in a DataLoader, the
default (NCHW) memory format, every layer run every epoch. Project = images decoded once into the
uint8 cache, batched tensor preprocessing, channels_last, inference_mode, and for
``finetune_top`` the frozen blocks run once per image (petsml.training.cached_top). Prints
images/s for (a) frozen feature extraction and (b) ``finetune_top`` epochs, the model-only
ceiling, validation accuracy after the same epochs, peak memory, and a final ``speedup: <x>``
line (project over naive, finetune_top, the project's one-off frozen pass included). A
"naive + channels_last" line shows how much of the gain is the memory format alone.

Every line names its precision and memory format, after a header naming the CPU, its flags and
the threads (``benchmarks/machine.py``). The naive path is the tutorial's: fp32, NCHW. The
project runs in ``model.precision`` (``auto``: bf16 on CPUs with native bf16) and channels_last;
each "model only" ceiling runs the project's very step (same precision, memory format, batch,
forward) on one batch already in memory, so the project can only approach it: a project figure
over 100% of its ceiling prints a warning that the ceiling is wrong, never the ratio.

    python -m benchmarks.throughput [FOLDER] [--epochs 8]   # default ../shared/pets-sample
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from benchmarks.machine import header, of_ceiling, peak_rss_mib, tag, timed
from benchmarks.naive import naive_loader
from petsml.config import load_params
from petsml.data.breeds import CLASS_ID, breed_of
from petsml.data.decode import DecodedImages, decode_images
from petsml.data.tensors import batches, to_input
from petsml.models.backbones import create_backbone
from petsml.models.classifier import Classifier
from petsml.models.precision import autocast, use_bf16
from petsml.training.cached_top import build_cache, draw, to_device, train_epoch
from petsml.training.features import extract_features
from petsml.training.loop import set_train_mode, train_step
from petsml.training.param_groups import build_param_groups
from petsml.training.top_split import TopModel, split_backbone

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")
NAIVE = tag(False, torch.contiguous_format)  # the tutorial's: fp32, NCHW


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", nargs="?", default=str(ROOT.parent / "shared" / "pets-sample"))
    parser.add_argument("--epochs", type=int, default=8, help="docs/BENCHMARKS.md's figures use 8")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--backbone", help="default: params.yaml's model.backbone")
    parser.add_argument("--image-size", type=int, help="default: the backbone's own")
    parser.add_argument("--decode-size", type=int, help="default: params.yaml's decode.size")
    parser.add_argument("--random-init", action="store_true", help="no pretrained weights")
    args = parser.parse_args()
    torch.manual_seed(0)
    params = load_params(ROOT / "params.yaml")
    name = args.backbone or params.model.backbone
    decode_size = args.decode_size or params.decode.size

    def new_backbone():
        return create_backbone(name, not args.random_init, image_size=args.image_size)

    folder = Path(args.folder)
    files = sorted(p for p in (folder / "images").glob("*.jpg"))
    frame = pd.DataFrame(
        {"file": [f"images/{p.name}" for p in files], "image_id": [p.stem for p in files]}
    )
    frame["label"] = frame.image_id.map(lambda i: CLASS_ID[breed_of(i)])
    rng = np.random.default_rng(0)
    frame["val"] = rng.random(len(frame)) < 0.25
    train, val = frame[~frame.val], frame[frame.val]
    bf16 = use_bf16(CPU, params.model.precision)
    project_tag = tag(bf16, torch.channels_last)
    print(header())
    print(
        f"{len(frame)} photos from {folder} ({len(train)} train / {len(val)} val), backbone "
        f"{name}, batch {args.batch_size}, model.precision "
        f"{params.model.precision} -> {'bf16' if bf16 else 'fp32'}"
    )

    backbone = new_backbone().eval()
    prep = backbone.preprocessing
    # The tutorial's model is fp32 NCHW; the project's path converts its own to channels_last.
    naive_backbone = new_backbone().eval()

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
            return [naive_backbone.forward_features(xb) for xb, _ in feature_loader]

    naive_secs, _ = timed(naive_features)
    with tempfile.TemporaryDirectory() as tmp:
        decode_secs, _ = timed(
            lambda: decode_images(frame, folder, Path(tmp) / "dec", decode_size, args.workers)
        )
        cache = DecodedImages.open(Path(tmp) / "dec")
        arrays = cache.take(frame.image_id)

        # What stages/featurize.py runs: read-ahead batches, penultimate + early features.
        def project_features():
            return extract_features(
                backbone, cache, frame.image_id.tolist(), args.batch_size, CPU,
                precision=params.model.precision,
            )  # fmt: skip

        project_secs, _ = timed(project_features)
        train_arr, val_arr = cache.take(train.image_id), cache.take(val.image_id)

    # Model-only ceiling: the project's forward (both feature sets, same precision, memory
    # format and batch) on one prepared batch again and again, no data path; measured after the
    # project's pass so both see the same warm caches, best of two so load cannot lower it.
    x = to_input(torch.from_numpy(arrays[: args.batch_size]), prep.mean, prep.std,
                 size=prep.input_size, channels_last=True)  # fmt: skip
    reps = max(4, len(frame) // args.batch_size)  # as many batches as the real pass

    def model_only_features():
        for _ in range(reps):
            with autocast(CPU, bf16):
                pen, ear = backbone.forward_both(x)
            pen.float().numpy(), ear.float().numpy()

    with torch.inference_mode():
        model_only_features()
        secs = min(timed(model_only_features)[0] for _ in range(2))
    model_only = reps * len(x) / secs

    n = len(frame)
    print("\n(a) frozen feature extraction")
    print(f"  model only          {model_only:8.1f} images/s  {project_tag}")
    print(f"  naive               {n / naive_secs:8.1f} images/s  {NAIVE}")
    print(
        f"  project             {n / project_secs:8.1f} images/s  {project_tag} "
        f"({of_ceiling(n / project_secs, model_only)}; decode once {decode_secs:.1f}s)"
    )

    # (b) finetune_top epochs.
    def make_model(memory_format=torch.channels_last):
        torch.manual_seed(0)
        net = Classifier(new_backbone(), 37)
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
            split, train_arr, train.label.to_numpy(), prep, CPU, shifts=True,
            flip=params.finetune_top.cache_flip, precision=params.model.precision,
        )
    )  # fmt: skip
    top = TopModel(split, net.head)

    def project_epochs():
        for epoch in range(args.epochs):
            set_train_mode(net, frozen)
            train_epoch(
                top, cache, opt, None, CPU, args.batch_size, seed=epoch,
                precision=params.model.precision,
            )  # fmt: skip

    epoch_secs, _ = timed(project_epochs)
    project_acc = accuracy(net)
    # Model-only ceiling of the epochs: train_epoch's step (top blocks + head, same precision
    # and memory format) on one drawn batch of cached maps, as many steps as the epochs ran.
    rng = np.random.default_rng(0)
    idx = torch.arange(min(args.batch_size, len(cache.labels)))
    h, y = to_device(draw(cache, idx, rng), CPU), cache.labels[idx]  # copies, not inference views
    steps = seen_epoch // args.batch_size * args.epochs

    def model_only_steps(n_steps: int) -> None:
        set_train_mode(net, frozen)
        for _ in range(n_steps):
            train_step(top, h, y, opt, None, CPU, bf16)

    model_only_steps(2)  # best of two: load on a shared machine cannot lower the ceiling
    top_ceiling = steps * len(h) / min(timed(lambda: model_only_steps(steps))[0] for _ in range(2))
    seen = seen_epoch * args.epochs
    naive_ips = seen / naive_ft_secs
    project_ips = seen / (cache_secs + epoch_secs)
    cl_tag = tag(False, torch.channels_last)
    print(f"\n(b) finetune_top, {args.epochs} epochs of {seen_epoch} images")
    print(f"  naive (tutorial)    {naive_ips:8.1f} images/s  {NAIVE}  val accuracy {naive_acc:.3f}")
    print(
        f"  naive+channels_last {seen_epoch / cl_secs:8.1f} images/s  {cl_tag}  "
        "(1 epoch, speed only)"
    )
    print(
        f"  project             {project_ips:8.1f} images/s  {project_tag}  val accuracy "
        f"{project_acc:.3f}  (frozen pass once {cache_secs:.1f}s included)"
    )
    print(
        f"  project per epoch   {seen / epoch_secs:8.1f} images/s  {project_tag}  "
        f"({of_ceiling(seen / epoch_secs, top_ceiling)}, after the frozen pass)"
    )
    print(f"  model only epochs   {top_ceiling:8.1f} images/s  {project_tag}  (top blocks + head)")
    print(f"\npeak memory (RSS): {peak_rss_mib():.0f} MiB")
    print(f"speedup: {project_ips / naive_ips:.2f}")


if __name__ == "__main__":
    main()
