"""Full fine-tuning throughput: the tutorial path against the project's, same model, one run.

Made for one GPU (the target in docs/BENCHMARKS.md: ResNet-50 in bf16, >= 5,000 images/s on one
H200), and runs anywhere (``--device cpu`` with a small ``--backbone`` checks that it works).
Three figures, each after a warm-up, with every layer trainable (``finetune_full``):

- naive: JPEG files -> PIL decode + torchvision transforms in a DataLoader (one worker per core,
  pinned memory), float32, NCHW, eager. On a GPU this is decode-bound.
- project: what ``stages/train.py`` runs (``finetune.train_epoch_full``): the decoded uint8 cache
  read ahead in a thread, augmentation on the device, channels_last, bf16 autocast where the
  hardware has it (``model.precision``),
  ``--compile`` for torch.compile.
- model only: the project's step (same forward, precision, memory format, batch, compile) on
  one prepared batch again and again: the ceiling for the project's path. A project figure over
  100% of it prints a warning that the ceiling is wrong, never the ratio.

A header names the machine (CPU, flags, threads, GPU, load); every line names its precision and
memory format (``benchmarks/machine.py``). Without ``FOLDER`` the photos are synthetic
(``benchmarks/photos.py``); weights are random (speed does not depend on them).

    python -m benchmarks.finetune_full [FOLDER] [--backbone tv:resnet50] [--batch-size 256]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.machine import header, of_ceiling, peak_rss_mib, tag, timed
from benchmarks.naive import naive_loader
from benchmarks.photos import photo_files

ROOT = Path(__file__).resolve().parents[1]

from petsml.config import load_params  # noqa: E402
from petsml.data.decode import load_rgb  # noqa: E402
from petsml.data.tensors import augment, pick_device, to_input  # noqa: E402
from petsml.models.backbones import create_backbone  # noqa: E402
from petsml.models.classifier import Classifier  # noqa: E402
from petsml.models.precision import use_bf16  # noqa: E402
from petsml.training.loop import SplitData, train_epoch_full, train_step  # noqa: E402
from petsml.training.param_groups import build_param_groups  # noqa: E402

CLASSES = 37


def images_per_s(n_images: int, device: torch.device, run, *args) -> float:
    return n_images / timed(lambda: run(*args), device)[0]


def make_model(backbone: str, params, device: torch.device, memory_format, image_size=None):
    torch.manual_seed(0)
    net = Classifier(create_backbone(backbone, pretrained=False, image_size=image_size), CLASSES)
    groups = build_param_groups("finetune_full", net, params)
    net = net.to(device, memory_format=memory_format)
    return net, torch.optim.AdamW(groups.param_groups), groups.frozen_blocks


def naive_epochs(net, opt, loader, device: torch.device, epochs: int) -> None:
    net.train()
    for _ in range(epochs):
        for xb, yb in loader:
            xb = xb.to(device, non_blocking=True)
            loss = F.cross_entropy(net(xb), yb.to(device, non_blocking=True))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", nargs="?", help="a folder of JPEGs (default: synthetic)")
    parser.add_argument("--backbone", default="tv:resnet50")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--images", type=int, default=2048, help="synthetic photos to make")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per path")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--image-size", type=int, help="default: the backbone's own")
    parser.add_argument("--decode-size", type=int, help="default: params.yaml's decode.size")
    args = parser.parse_args()
    device = pick_device(args.device)
    params = load_params(ROOT / "params.yaml")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    bf16 = use_bf16(device, params.model.precision)
    project_tag = tag(bf16, torch.channels_last, compiled=args.compile)
    decode_size = args.decode_size or params.decode.size
    with tempfile.TemporaryDirectory() as tmp:
        files = photo_files(args.folder, Path(tmp), args.images)
        if len(files) < args.batch_size:
            sys.exit(f"{len(files)} photos is less than one batch of {args.batch_size}")
        labels = np.arange(len(files)) % CLASSES
        prep = create_backbone(
            args.backbone, pretrained=False, image_size=args.image_size
        ).preprocessing
        print(header(device))
        print(
            f"{args.backbone} full fine-tuning, {len(files)} photos, batch {args.batch_size}, "
            f"{prep.input_size}px, {device}, {args.workers} loader workers, model.precision "
            f"{params.model.precision} -> {'bf16' if bf16 else 'fp32'}"
        )
        steps = len(files) // args.batch_size
        seen = steps * args.batch_size * args.epochs

        # Naive: decode every photo every epoch in DataLoader workers; fp32 NCHW.
        nchw = torch.contiguous_format
        net, opt, _ = make_model(args.backbone, params, device, nchw, args.image_size)
        loader = naive_loader(
            files, labels.tolist(), prep, train=True, batch_size=args.batch_size,
            workers=args.workers, pin_memory=device.type == "cuda",
            persistent_workers=args.workers > 0,
        )  # fmt: skip

        naive_epochs(net, opt, loader, device, 1)  # warm-up: workers up, cuDNN algorithms chosen
        naive_ips = images_per_s(seen, device, naive_epochs, net, opt, loader, device, args.epochs)
        del net, opt, loader  # free the GPU memory before the project's run

        # Project: decode once, then train_epoch_full as stages/train.py runs it.
        started = time.perf_counter()
        data = SplitData(
            [p.stem for p in files],
            np.stack([load_rgb(p, decode_size) for p in files]),
            labels.astype(np.int64),
        )
        decode_secs = time.perf_counter() - started
        net, opt, frozen = make_model(
            args.backbone, params, device, torch.channels_last, args.image_size
        )
        forward = torch.compile(net) if args.compile else net
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
        gen = torch.Generator().manual_seed(0)

        def project(epochs: int) -> None:
            for epoch in range(epochs):
                train_epoch_full(
                    forward, net, frozen, data, prep, opt, sched, gen, device,
                    args.batch_size, shuffle_seed=epoch, desc="project",
                    prefetch_depth=params.train.prefetch, precision=params.model.precision,
                )  # fmt: skip

        project(1)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        project_ips = images_per_s(seen, device, project, args.epochs)
        peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None

        # Model only: the same step on one prepared batch, no data path.
        x_u8 = torch.from_numpy(data.images[: args.batch_size]).to(device)
        x = to_input(augment(x_u8, prep.input_size, gen), prep.mean, prep.std)
        y = torch.from_numpy(data.labels[: args.batch_size]).to(device)

        def model_only(n: int) -> None:
            net.train()
            for _ in range(n):
                train_step(forward, x, y, opt, sched, device, bf16)

        model_only(2)
        ceiling = images_per_s(seen, device, model_only, steps * args.epochs)

    naive_tag = tag(False, torch.contiguous_format)
    print(f"  naive (tutorial)             {naive_ips:9.1f} images/s  {naive_tag}")
    print(
        f"  project                      {project_ips:9.1f} images/s  {project_tag} "
        f"({of_ceiling(project_ips, ceiling)}; decode once {decode_secs:.1f}s)"
    )
    print(f"  model only                   {ceiling:9.1f} images/s  {project_tag}")
    if peak is not None:
        print(f"  peak GPU memory (project)    {peak:9.1f} GiB")
    else:
        print(f"  peak memory (RSS, process)   {peak_rss_mib() / 1024:9.1f} GiB")
    print(f"speedup: {project_ips / naive_ips:.2f}")


if __name__ == "__main__":
    main()
