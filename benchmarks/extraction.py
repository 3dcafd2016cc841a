"""Frozen feature extraction on any device: the tutorial path against the project's, one run.

The featurize stage's job (penultimate and early-block features of every image, once), at the
scale a GPU needs: naive = JPEG -> PIL + torchvision transforms in a DataLoader, fp32 NCHW; the
project = the uint8 cache decoded once, read ahead, channels_last, ``model.precision``
(``extract_features``, as ``stages/featurize.py`` runs it); model only = the project's forward
(same precision, memory format and batch) on one batch already on the device, the ceiling: a
project figure over 100% of it prints a warning that the ceiling is wrong. Photos are synthetic
unless FOLDER is given; the backbone's offline weights are used when it has them (speed does
not depend on them).

    python -m benchmarks.extraction [FOLDER] [--backbone efficientnet_lite0] [--device cuda]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import pandas as pd
import torch

from benchmarks.machine import header, of_ceiling, peak_rss_mib, tag, timed
from benchmarks.naive import naive_loader
from benchmarks.photos import photo_files

ROOT = Path(__file__).resolve().parents[1]

from petsml.config import load_params  # noqa: E402
from petsml.data.decode import DecodedImages, decode_images  # noqa: E402
from petsml.data.tensors import pick_device, to_input  # noqa: E402
from petsml.models.backbones import create_backbone  # noqa: E402
from petsml.models.precision import autocast, use_bf16  # noqa: E402
from petsml.training.features import extract_features  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", nargs="?", help="a folder of JPEGs (default: synthetic)")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--random-init", action="store_true", help="no pretrained weights")
    parser.add_argument("--image-size", type=int, help="default: the backbone's own")
    parser.add_argument("--decode-size", type=int, help="default: params.yaml's decode.size")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--images", type=int, default=4096, help="synthetic photos to make")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    device = pick_device(args.device)
    params = load_params(ROOT / "params.yaml")
    bf16 = use_bf16(device, params.model.precision)
    project_tag = tag(bf16, torch.channels_last)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    backbone = create_backbone(
        args.backbone, pretrained=not args.random_init, image_size=args.image_size
    ).eval()
    prep = backbone.preprocessing
    with tempfile.TemporaryDirectory() as tmp:
        files = photo_files(args.folder, Path(tmp), args.images)
        n = len(files)
        print(header(device))
        print(
            f"{args.backbone} feature extraction, {n} photos, batch {args.batch_size}, "
            f"{prep.input_size}px, {device}, {args.workers} loader workers, model.precision "
            f"{params.model.precision} -> {'bf16' if bf16 else 'fp32'}"
        )
        # Naive: the tutorial's fp32 NCHW model fed by a DataLoader decoding every JPEG.
        naive = create_backbone(
            args.backbone, pretrained=not args.random_init, image_size=args.image_size
        )
        naive = naive.eval().to(device)
        loader = naive_loader(
            files, [0] * n, prep, train=False, batch_size=args.batch_size,
            workers=args.workers, pin_memory=device.type == "cuda",
        )  # fmt: skip

        @torch.inference_mode()
        def naive_pass() -> None:
            for xb, _ in loader:
                naive.forward_features(xb.to(device, non_blocking=True)).float().cpu()

        naive_secs, _ = timed(naive_pass, device)
        naive.cpu()  # frees the device memory for the project's run

        frame = pd.DataFrame({"image_id": [p.stem for p in files], "file": [str(p) for p in files]})
        decode_secs, _ = timed(
            lambda: decode_images(
                frame, "/", Path(tmp) / "decoded", args.decode_size or params.decode.size,
                args.workers,
            )
        )  # fmt: skip
        decoded = DecodedImages.open(Path(tmp) / "decoded")
        ids = frame["image_id"].tolist()

        def project() -> None:
            extract_features(
                backbone, decoded, ids, args.batch_size, device, precision=params.model.precision
            )

        extract_features(backbone, decoded, ids[: args.batch_size], args.batch_size, device)
        project_secs, _ = timed(project, device)
        x = to_input(
            torch.from_numpy(decoded.take(ids[: args.batch_size])).to(device),
            prep.mean, prep.std, size=int(prep.input_size), channels_last=True,
        )  # fmt: skip
        reps = max(4, -(-n // args.batch_size))

        @torch.inference_mode()
        def model_only() -> None:
            for _ in range(reps):
                with autocast(device, bf16):
                    pen, ear = backbone.forward_both(x)
                pen.float().cpu(), ear.float().cpu()

        model_only()
        ceiling = reps * len(x) / min(timed(model_only, device)[0] for _ in range(2))
    project_ips = n / project_secs
    naive_tag = tag(False, torch.contiguous_format)
    print(f"  naive (tutorial)   {n / naive_secs:9.1f} images/s  {naive_tag}")
    print(
        f"  project            {project_ips:9.1f} images/s  {project_tag} "
        f"({of_ceiling(project_ips, ceiling)}; decode once {decode_secs:.1f}s)"
    )
    print(f"  model only         {ceiling:9.1f} images/s  {project_tag}")
    if device.type == "cuda":
        print(f"  peak GPU memory    {torch.cuda.max_memory_allocated() / 2**30:9.1f} GiB")
    else:
        print(f"  peak memory (RSS)  {peak_rss_mib() / 1024:9.1f} GiB")
    print(f"speedup: {project_ips * naive_secs / n:.2f}")


if __name__ == "__main__":
    main()
