"""The trained strategies: fine-tune the top, fine-tune everything, or train from scratch.

All three share one loop so they compete on equal terms (same data, augmentation, budget,
schedule and early stopping) and differ only in what is trainable and at which learning rate:

- ``finetune_top``: a new head plus the last ``finetune_top.unfreeze_blocks`` blocks; the rest
  of the trunk is frozen and kept in eval mode, so its BatchNorm statistics stay ImageNet's.
  Head at ``lr``, unfrozen blocks at ``lr * backbone_lr_scale``.
- ``finetune_full``: every parameter trains; the head at ``lr`` and each block ``d`` steps below
  it at ``lr * layer_decay ** d`` (layer-wise LR decay: generic stem features move least).
- ``scratch``: the same architecture with random weights, everything at ``scratch.lr``. The
  baseline that shows what the pretrained weights are worth.

Training reads the decoded uint8 cache, augments whole batches on the device, uses AdamW with
a linear warm-up then cosine schedule (stepped per batch) and keeps the weights of the best
validation epoch. ``finetune_top`` runs its frozen trunk once, not every epoch
(:mod:`petsml.training.cached_top`): the frozen blocks' outputs for each whole train image (val:
the centre crop) are cached as float16 and each epoch trains only the top blocks and the head on
a randomly shifted, randomly mirrored model-sized window of them; a backbone that cannot be cut
at the block boundary falls back to the full forward pass (logged).

With ``head_init: probe`` (LP-FT) the head starts as a logistic-regression probe fitted on the
eval-mode features, and every BatchNorm keeps its running statistics while training (its scale
and shift still train): in train mode the trainable blocks would normalise with batch statistics
instead, hand the probe's large weights different features at the first step and undo it (on
generated photos: first-epoch loss ~100, validation 0.86 -> 0.22). The probe-initialised model
also competes as epoch 0, so the kept weights are never worse on validation than the probe.

A checkpoint is written atomically after every epoch (outside the DVC output, which DVC deletes
before re-running a stage) and ``resume=True`` continues from it only when its fingerprint, a
hash of every setting, of the training code (:func:`code_digest`) and of the ids, labels and
decoded pixels the run trains on, still matches (the finetune_top cache is rebuilt on resume).
Ctrl-C raises :class:`TrainingInterrupted`, which says which checkpoint a rerun resumes from.

This module never imports MLflow, Prefect or DVC, so it runs alone on a GPU machine.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from petsml import paths
from petsml.config import TRAINED_STRATEGIES, Params
from petsml.data.breeds import labels_for
from petsml.data.decode import DecodedImages
from petsml.data.prefetch import pinned, prefetch
from petsml.data.split import load_split
from petsml.data.tensors import augment, batches, pick_device, to_input
from petsml.errors import PetsError
from petsml.io import atomic_dir, atomic_path, write_json
from petsml.models.backbones import create_backbone
from petsml.models.classifier import Classifier, save_classifier
from petsml.models.precision import use_bf16
from petsml.training import cached_top
from petsml.training.probe_init import init_head_from_probe, pooled_features

log = logging.getLogger(__name__)

CHECKPOINT = "last.pt"
CHECKPOINT_VERSION = 2  # 2: the fingerprint covers the code and the decoded pixels

# The petsml sources the trained weights depend on (relative to PACKAGE_ROOT): a checkpoint made
# by other code is not resumed. Tracking, evaluation and the stages cannot change the weights.
PACKAGE_ROOT = Path(__file__).resolve().parents[1]
CODE = ("training", "models", "data", "config.py", "errors.py", "io.py", "paths.py")

# Called after every epoch, once its checkpoint is on disk: (epoch, model, history record).
EpochCallback = Callable[[int, nn.Module, dict[str, Any]], None]


class TrainingError(PetsError):
    """A trained strategy cannot run with the given settings or data."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training; ``saved`` says in one sentence what is on disk to resume from.

    A KeyboardInterrupt still (so nothing treats it as a failure to report), which
    :func:`petsml.stage.run_stage` turns into that sentence and exit code 130.
    """

    def __init__(self, saved: str) -> None:
        super().__init__(saved)
        self.saved = saved


# --------------------------------------------------------------------------------------------
# Model and parameter groups


def build_model(strategy: str, params: Params, num_classes: int) -> Classifier:
    """The strategy's :class:`Classifier`, initialised deterministically from ``train.seed``."""
    _check_strategy(strategy)
    torch.manual_seed(params.train.seed)
    backbone = create_backbone(
        params.model.backbone,
        pretrained=params.model.pretrained and strategy != "scratch",
        early_block=params.model.early_block,
        image_size=params.model.image_size,
    )
    return Classifier(backbone, num_classes, feature="penultimate")


@dataclass
class Groups:
    """AdamW parameter groups (head first) and the trunk blocks that stay frozen."""

    param_groups: list[dict[str, Any]]
    frozen_blocks: list[nn.Module]


def build_param_groups(strategy: str, model: Classifier, params: Params) -> Groups:
    """Freeze what the strategy freezes and give every trainable block its learning rate.

    One group per block (named ``block<i>``, ``i`` counted from the stem) plus ``head``, so the
    per-layer rates are visible in the optimizer and in checkpoints. Also sets
    ``requires_grad`` on every parameter.
    """
    _check_strategy(strategy)
    settings = getattr(params, strategy)
    blocks = list(model.backbone.blocks())
    n = len(blocks)
    head_params = [p for p in model.head.parameters()]
    for p in model.parameters():
        p.requires_grad_(True)

    if strategy == "finetune_top":
        k = settings.unfreeze_blocks
        if k > n:
            raise TrainingError(
                f"finetune_top.unfreeze_blocks={k} but backbone {params.model.backbone!r} has "
                f"only {n} blocks; lower it in params.yaml."
            )
        frozen = blocks[: n - k]
        for block in frozen:
            for p in block.parameters():
                p.requires_grad_(False)
        block_lrs = {i: settings.lr * settings.backbone_lr_scale for i in range(n - k, n)}
    elif strategy == "finetune_full":
        frozen = []
        block_lrs = {i: settings.lr * settings.layer_decay ** (n - i) for i in range(n)}
    else:  # scratch
        frozen = []
        block_lrs = dict.fromkeys(range(n), settings.lr)

    groups = [{"name": "head", "params": head_params, "lr": settings.lr}]
    for i in sorted(block_lrs, reverse=True):  # top block first, after the head
        block_params = [p for p in blocks[i].parameters() if p.requires_grad]
        if block_params:
            groups.append({"name": f"block{i}", "params": block_params, "lr": block_lrs[i]})
    for group in groups:
        group["weight_decay"] = settings.weight_decay

    # Every trainable parameter must be in exactly one group, or it would silently not train.
    seen: dict[int, str] = {}
    for group in groups:
        for p in group["params"]:
            if id(p) in seen:
                raise TrainingError(f"a parameter is in both {seen[id(p)]} and {group['name']}")
            seen[id(p)] = group["name"]
    orphans = [
        name for name, p in model.named_parameters() if p.requires_grad and id(p) not in seen
    ]
    if orphans:
        raise TrainingError(
            f"backbone {params.model.backbone!r}: parameters outside every block "
            f"(e.g. {orphans[0]}); Backbone.blocks() must own the whole trunk."
        )
    return Groups(groups, frozen)


def lr_factor(step: int, total_steps: int, warmup_steps: int) -> float:
    """Linear warm-up to 1, then cosine decay to 0 at ``total_steps``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


# --------------------------------------------------------------------------------------------
# Data


@dataclass
class SplitData:
    image_ids: list[str]
    images: np.ndarray  # (N, S, S, 3) uint8
    labels: np.ndarray  # (N,) int64


def _load_data(split: str, task: str, splits_dir: Path, decoded: DecodedImages) -> SplitData:
    path = Path(splits_dir) / f"{split}.csv"
    if not path.exists():
        raise TrainingError(f"{path}: split missing. Run `dvc repro split` first.")
    frame = load_split(path, task)
    if frame.empty:
        raise TrainingError(f"{path} has no rows; check the split stage and validate.* params.")
    ids = frame["image_id"].tolist()
    return SplitData(ids, decoded.take(ids), np.array(frame["label"], dtype=np.int64))


def code_digest(root: Path | None = None) -> str:
    """sha256 of the petsml sources training runs (:data:`CODE` under ``root``, default the
    installed package): names and bytes, so an edit, a new or a deleted module changes it."""
    root = Path(root or PACKAGE_ROOT)
    digest = hashlib.sha256()
    for name in CODE:
        path = root / name
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path] if path.exists() else []
        for file in files:
            digest.update(file.relative_to(root).as_posix().encode() + b"\0")
            digest.update(hashlib.sha256(file.read_bytes()).digest())
    return digest.hexdigest()


def fingerprint(
    strategy: str, params: Params, train: SplitData, val: SplitData, size: int, code: str = ""
) -> str:
    """Hash of every setting and input the trained weights depend on (not device or workers):
    params, ``code`` (:func:`code_digest`), image ids, labels and the decoded pixels themselves
    (sha256 of the in-memory arrays: ~1 s per GB with SHA extensions, against minutes of
    training; a re-decoded or replaced photo changes it even when its id does not)."""
    t = params.train
    relevant = {
        "version": CHECKPOINT_VERSION,
        "strategy": strategy,
        "task": params.data.task,
        "model": params.model.model_dump(),
        "strategy_params": getattr(params, strategy).model_dump(),
        "train": {
            "seed": t.seed,
            "epochs": t.epochs,
            "batch_size": t.batch_size,
            "patience": t.patience,
            "warmup_epochs": t.warmup_epochs,
        },
        "decode_size": size,
        "code": code,
    }
    digest = hashlib.sha256(json.dumps(relevant, sort_keys=True).encode())
    for data in (train, val):
        digest.update("\n".join(data.image_ids).encode())
        digest.update(data.labels.tobytes())
        digest.update(memoryview(np.ascontiguousarray(data.images)).cast("B"))
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------
# Checkpoints


def _cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def _rng_state(generator: torch.Generator) -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "augment": generator.get_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": random.getstate(),
    }


def _set_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    generator.set_state(state["augment"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    random.setstate(state["python"])


def _python_rng(value: Any) -> Any:
    """torch.load(weights_only) returns tuples as lists; random.setstate needs tuples."""
    return tuple(_python_rng(v) for v in value) if isinstance(value, list | tuple) else value


def load_checkpoint(path: Path, expected: str) -> dict[str, Any] | None:
    """The checkpoint at ``path`` when it exists, loads and has the ``expected`` fingerprint."""
    if not path.exists():
        log.info("no checkpoint at %s: starting fresh", path)
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a torn or foreign file is not worth dying for
        log.warning("checkpoint %s unreadable (%s): starting fresh", path, error)
        return None
    if state.get("fingerprint") != expected:
        log.info(
            "checkpoint %s was made with other params or data (fingerprint %.12s, now %.12s): "
            "starting fresh",
            path,
            state.get("fingerprint"),
            expected,
        )
        return None
    state["rng"]["python"] = _python_rng(state["rng"]["python"])
    return state


# --------------------------------------------------------------------------------------------
# Loop


@torch.inference_mode()
def evaluate(
    forward: Callable[[torch.Tensor], torch.Tensor],
    model: nn.Module,
    data: SplitData,
    prep,
    device: torch.device,
    batch_size: int,
    prefetch_depth: int = 2,
    precision: str = "auto",
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy on centre crops."""
    model.eval()
    inputs = centre_crops(data, prep, device, batch_size, prefetch_depth)
    return cached_top.score(forward, inputs, device, len(data.labels), precision)


def centre_crops(
    data: SplitData, prep, device: torch.device, batch_size: int, prefetch_depth: int = 2
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(model input, label) batches of the centre crops, in order, read ahead, on ``device``."""
    stream = (pinned(b, device) for b in batches(data.images, data.labels, batch_size))
    for x_u8, y in prefetch(stream, prefetch_depth):
        x_u8 = x_u8.to(device, non_blocking=True)
        x = to_input(x_u8, prep.mean, prep.std, size=prep.input_size)
        yield x, y.to(device, non_blocking=True)


def train_epoch_full(
    forward: Callable[[torch.Tensor], torch.Tensor],
    model: nn.Module,
    frozen_blocks: list[nn.Module],
    data: SplitData,
    prep,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    generator: torch.Generator,
    device: torch.device,
    batch_size: int,
    shuffle_seed: int,
    desc: str,
    prefetch_depth: int = 2,
    precision: str = "auto",
    keep_norm_stats: bool = False,
) -> tuple[float, float]:
    """One epoch through the whole network: uint8 batches read ahead, augmented on the device,
    bf16 autocast on CUDA; the short last batch is dropped. Returns (mean loss, accuracy)."""
    cached_top.set_train_mode(model, frozen_blocks, keep_norm_stats)
    bf16 = use_bf16(device, precision)
    n = len(data.labels)
    steps = _steps_per_epoch(n, batch_size)
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    bar = tqdm(total=steps, desc=desc, unit="batch", mininterval=2, leave=False)
    stream = batches(data.images, data.labels, batch_size, shuffle=True, seed=shuffle_seed)
    stream = (pinned(b, device) for b in stream)
    for step, (x_u8, y) in enumerate(prefetch(stream, prefetch_depth)):
        if step >= steps:  # drop the short last batch: BatchNorm needs more than one sample
            break
        x_u8 = x_u8.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True)
        x_u8 = augment(x_u8, prep.input_size, generator)
        x = to_input(x_u8, prep.mean, prep.std)
        loss, logits = cached_top.train_step(forward, x, y, optimizer, scheduler, device, bf16)
        loss_sum += loss * len(y)
        correct += (logits.argmax(1) == y).sum()
        seen += len(y)
        bar.update(1)
        if step % 10 == 0 or step == steps - 1:  # .item() syncs the GPU: not every step
            bar.set_postfix(
                loss=f"{loss_sum.item() / seen:.3f}", acc=f"{correct.item() / seen:.3f}"
            )
    bar.close()
    if not seen:
        raise TrainingError("no training batch ran; the train split is empty")
    loss_value = loss_sum.item() / seen
    _check_loss(loss_value)
    return loss_value, correct.item() / seen


def _probe_features(
    model: Classifier,
    split: cached_top.TopSplit | None,
    caches: tuple[cached_top.FeatureCache, cached_top.FeatureCache] | None,
    train_data: SplitData,
    val_data: SplitData,
    prep,
    device: torch.device,
    params: Params,
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """(features, labels) of train and val for the probe: pooled penultimate vectors of the
    centre crops, in eval mode; from the frozen-block cache when there is one (the top blocks
    only), else through the whole backbone."""
    model.eval()
    size = params.evaluate.batch_size
    precision = params.model.precision
    if caches is not None and split is not None:
        forward = split.top_part
        streams = [cached_top.centre_batches(c, device, size) for c in caches]
    else:
        forward = model.backbone.forward_features
        depth = params.train.prefetch
        streams = [centre_crops(d, prep, device, size, depth) for d in (train_data, val_data)]
    feats = [
        pooled_features(forward, (x for x, _ in stream), device, precision) for stream in streams
    ]
    return (feats[0], train_data.labels), (feats[1], val_data.labels)


def _check_loss(loss_value: float) -> None:
    if not math.isfinite(loss_value):
        raise TrainingError(
            f"training loss is {loss_value}: the learning rate is too high for this model; "
            "lower the strategy's lr in params.yaml."
        )


def _steps_per_epoch(n: int, batch_size: int) -> int:
    return max(1, n // batch_size) if n >= 2 else 1


def train_strategy(
    strategy: str,
    params: Params,
    out_dir: str | Path,
    *,
    resume: bool = False,
    checkpoint_dir: str | Path,
    splits_dir: str | Path = paths.SPLITS,
    decoded_dir: str | Path = paths.DECODED,
    on_epoch_end: EpochCallback | None = None,
) -> dict[str, Any]:
    """Train ``strategy`` and write ``out_dir/{model.pt,history.json,summary.json}``.

    ``checkpoint_dir`` gets ``last.pt`` after every epoch and is removed once the model
    directory is written. With ``resume=True`` an existing checkpoint whose fingerprint
    matches is continued from the epoch after it; otherwise training starts fresh.
    ``on_epoch_end(epoch, model, record)`` runs after each epoch's checkpoint is saved.
    Returns the summary written to ``summary.json``. Ctrl-C raises
    :class:`TrainingInterrupted` saying which checkpoint (if any) a resumed run continues from.
    """
    _check_strategy(strategy)
    checkpoint_path = Path(checkpoint_dir) / CHECKPOINT
    saved: dict[str, int] = {}  # {"epoch": e} once a resumable checkpoint holds epoch e
    try:
        return _train_strategy(
            strategy, params, Path(out_dir), resume, Path(checkpoint_dir), Path(splits_dir),
            Path(decoded_dir), on_epoch_end, saved,
        )  # fmt: skip
    except KeyboardInterrupt:
        if "epoch" in saved:
            note = (
                f"{strategy} interrupted: {checkpoint_path} holds epoch {saved['epoch']} of "
                f"{params.train.epochs}; `dvc repro` resumes from it"
            )
        else:
            note = (
                f"{strategy} interrupted before its first epoch was saved; `dvc repro` "
                "starts it again"
            )
        raise TrainingInterrupted(note) from None


def _train_strategy(
    strategy: str,
    params: Params,
    out_dir: Path,
    resume: bool,
    checkpoint_dir: Path,
    splits_dir: Path,
    decoded_dir: Path,
    on_epoch_end: EpochCallback | None,
    saved: dict[str, int],
) -> dict[str, Any]:
    checkpoint_path = checkpoint_dir / CHECKPOINT
    t = params.train
    task = params.data.task
    class_names = list(labels_for(task))
    settings = getattr(params, strategy)

    decoded = DecodedImages.open(decoded_dir)
    train_data = _load_data("train", task, Path(splits_dir), decoded)
    val_data = _load_data("val", task, Path(splits_dir), decoded)
    bad = np.setdiff1d(
        np.concatenate([train_data.labels, val_data.labels]), range(len(class_names))
    )
    if bad.size:
        raise TrainingError(f"labels {bad[:5].tolist()} are outside task {task!r}'s classes")
    if decoded.size != params.decode.size:
        log.warning(
            "decoded cache is %dpx but decode.size is %d; using the cache (re-run decode)",
            decoded.size,
            params.decode.size,
        )

    device = pick_device(t.device)
    precision = params.model.precision
    random.seed(t.seed)
    np.random.seed(t.seed)
    model = build_model(strategy, params, len(class_names))
    prep = model.backbone.preprocessing
    if prep.input_size > decoded.size:
        raise TrainingError(
            f"model input {prep.input_size}px is larger than the decoded images "
            f"({decoded.size}px): raise decode.size or lower model.image_size in params.yaml."
        )
    groups = build_param_groups(strategy, model, params)
    split = None
    if strategy == "finetune_top":
        split = cached_top.split_backbone(model.backbone, settings.unfreeze_blocks)
        if split is None:
            log.info(
                "finetune_top: backbone %r cannot be split at the frozen blocks; running the "
                "full forward pass every step (no cached frozen outputs)",
                params.model.backbone,
            )
    # channels_last everywhere: on CPU it makes the depthwise convolutions' backward pass 3x
    # faster (measured) and the fine-tuning step ~1.4x; on GPUs tensor cores want it.
    model = model.to(device, memory_format=torch.channels_last)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    optimizer = torch.optim.AdamW(groups.param_groups)
    steps = _steps_per_epoch(len(train_data.labels), t.batch_size)
    total_steps = steps * t.epochs
    warmup_steps = steps * t.warmup_epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, warmup_steps)
    )
    generator = torch.Generator().manual_seed(t.seed)

    forward: Callable[[torch.Tensor], torch.Tensor] = model
    # The cached path runs only the trainable top blocks and the head on cached frozen outputs.
    top_forward = cached_top.TopModel(split, model.head) if split is not None else None
    if t.compile:
        if device.type == "mps":
            log.warning("train.compile is ignored on mps")
        else:
            forward = torch.compile(model)
            if top_forward is not None:
                top_forward = torch.compile(top_forward)

    # LP-FT: the probe head was fitted on eval-mode features; trainable BatchNorm in train mode
    # would normalise with batch statistics instead and hand the probe different features at
    # the first step (on generated photos: loss ~100, val 0.86 -> 0.22). Keep running stats.
    from_probe = getattr(settings, "head_init", "random") == "probe"
    started = time.perf_counter()
    fp = fingerprint(strategy, params, train_data, val_data, decoded.size, code_digest())
    log.debug("fingerprint %.12s in %.2fs", fp, time.perf_counter() - started)
    history: list[dict[str, Any]] = []
    best = {"accuracy": -1.0, "epoch": 0, "state": None}
    bad_epochs = 0
    start_epoch = 1
    stopped_early = False
    resumed_from = None
    state = None
    if resume:
        state = load_checkpoint(checkpoint_path, fp)
    elif checkpoint_path.exists():
        log.info("resume is off: ignoring the checkpoint at %s", checkpoint_path)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"], generator)
        history = state["history"]
        best = state["best"]
        bad_epochs = state["bad_epochs"]
        stopped_early = state["stopped_early"]
        start_epoch = state["epoch"] + 1
        resumed_from = state["epoch"]
        saved["epoch"] = resumed_from
        log.info("%s: resuming after epoch %d from %s", strategy, state["epoch"], checkpoint_path)
        del state

    log.info(
        "%s: %d train / %d val images, %d classes, %s, input %dpx, %d steps/epoch, "
        "%d trainable / %d parameters",
        strategy,
        len(train_data.labels),
        len(val_data.labels),
        len(class_names),
        device,
        prep.input_size,
        steps,
        sum(p.numel() for p in model.parameters() if p.requires_grad),
        sum(p.numel() for p in model.parameters()),
    )
    caches = None
    setup_seconds = 0.0  # the frozen-block cache and the probe: one-offs, counted in epoch 1
    if top_forward is not None and start_epoch <= t.epochs and not stopped_early:
        # The frozen trunk's outputs, once: whole train images (+ mirrors), val centre crops.
        started = time.perf_counter()
        cached_top.set_train_mode(model, groups.frozen_blocks, from_probe)
        eval_batch = params.evaluate.batch_size
        caches = (
            cached_top.build_cache(
                split, train_data.images, train_data.labels, prep, device, shifts=True,
                flip=settings.cache_flip, batch_size=eval_batch,
                desc=f"{strategy} cache train", precision=precision,
            ),
            cached_top.build_cache(
                split, val_data.images, val_data.labels, prep, device,
                batch_size=eval_batch, desc=f"{strategy} cache val", precision=precision,
            ),
        )  # fmt: skip
        setup_seconds = time.perf_counter() - started
        rows, cols = caches[0].positions
        log.info(
            "%s: cached the frozen blocks' outputs %s (%d view(s), %dx%d window offsets, "
            "%.0f KiB/train image, %.0f MiB in all) in %.1fs",
            strategy,
            tuple(caches[0].maps.shape[2:]),
            caches[0].maps.shape[1],
            rows,
            cols,
            caches[0].bytes_per_image / 1024,
            (caches[0].maps.nbytes + caches[1].maps.nbytes) / 2**20,
            setup_seconds,
        )

    def validate() -> tuple[float, float]:
        if caches is not None:
            return cached_top.evaluate(
                top_forward, model, caches[1], device, params.evaluate.batch_size, precision
            )
        return evaluate(
            forward, model, val_data, prep, device, params.evaluate.batch_size, t.prefetch,
            precision,
        )  # fmt: skip

    if resumed_from is None and from_probe:
        started = time.perf_counter()
        probe = _probe_features(model, split, caches, train_data, val_data, prep, device, params)
        init_head_from_probe(model, *probe, settings.probe_C)
        # The probe competes as epoch 0: fine-tuning keeps its weights unless an epoch beats it.
        _, probe_acc = validate()
        best = {"accuracy": probe_acc, "epoch": 0, "state": _cpu_state(model)}
        log.info("%s: the probe-initialised model scores val accuracy %.4f", strategy, probe_acc)
        setup_seconds += time.perf_counter() - started
    for epoch in range(start_epoch, t.epochs + 1):
        if stopped_early:
            break
        started = time.perf_counter() - setup_seconds
        setup_seconds = 0.0
        lr = optimizer.param_groups[0]["lr"]
        shuffle_seed = t.seed * 100_003 + epoch
        desc = f"{strategy} {epoch}/{t.epochs}"
        if caches is not None:
            cached_top.set_train_mode(model, groups.frozen_blocks, from_probe)
            train_loss, train_acc = cached_top.train_epoch(
                top_forward, caches[0], optimizer, scheduler, device, t.batch_size,
                seed=shuffle_seed, desc=desc, precision=precision,
            )  # fmt: skip
            _check_loss(train_loss)
        else:
            train_loss, train_acc = train_epoch_full(
                forward,
                model,
                groups.frozen_blocks,
                train_data,
                prep,
                optimizer,
                scheduler,
                generator,
                device,
                t.batch_size,
                shuffle_seed=shuffle_seed,
                desc=desc,
                prefetch_depth=t.prefetch,
                precision=precision,
                keep_norm_stats=from_probe,
            )
        val_loss, val_acc = validate()
        record = {
            "epoch": epoch,
            "train_loss": train_loss,
            "train_accuracy": train_acc,
            "val_loss": val_loss,
            "val_accuracy": val_acc,
            "lr": lr,
            "seconds": time.perf_counter() - started,
        }
        history.append(record)
        if val_acc > best["accuracy"]:
            best = {"accuracy": val_acc, "epoch": epoch, "state": _cpu_state(model)}
            bad_epochs = 0
        else:
            bad_epochs += 1
            stopped_early = bad_epochs >= t.patience and epoch < t.epochs
        log.info(
            "%s epoch %d/%d: train loss %.4f acc %.4f | val loss %.4f acc %.4f | lr %.2e | %.1fs%s",
            strategy,
            epoch,
            t.epochs,
            train_loss,
            train_acc,
            val_loss,
            val_acc,
            lr,
            record["seconds"],
            " (best)" if best["epoch"] == epoch else "",
        )
        if stopped_early:
            log.info(
                "%s: early stop, no val accuracy gain for %d epochs (best %.4f at epoch %d)",
                strategy,
                bad_epochs,
                best["accuracy"],
                best["epoch"],
            )
        with atomic_path(checkpoint_path, suffix=".pt") as tmp:
            torch.save(
                {
                    "fingerprint": fp,
                    "strategy": strategy,
                    "epoch": epoch,
                    "model": _cpu_state(model),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "best": best,
                    "bad_epochs": bad_epochs,
                    "stopped_early": stopped_early,
                    "history": history,
                    "rng": _rng_state(generator),
                },
                tmp,
            )
        saved["epoch"] = epoch
        if on_epoch_end is not None:
            on_epoch_end(epoch, model, record)

    if best["state"] is None:
        raise TrainingError("no epoch was trained; check train.epochs")
    model.load_state_dict(best["state"])
    model = model.to("cpu", memory_format=torch.contiguous_format).eval()
    summary = {
        "strategy": strategy,
        "task": task,
        "backbone": params.model.backbone,
        "val_accuracy": float(best["accuracy"]),
        "train_seconds": float(sum(r["seconds"] for r in history)),
        "best_epoch": int(best["epoch"]),
        "epochs_run": len(history),
        "device": device.type,
        "stopped_early": bool(stopped_early),
        "resumed_from_epoch": resumed_from,
        "params": {
            **settings.model_dump(),
            "pretrained": params.model.pretrained and strategy != "scratch",
            "epochs": t.epochs,
            "batch_size": t.batch_size,
            "patience": t.patience,
            "warmup_epochs": t.warmup_epochs,
            "seed": t.seed,
        },
    }
    meta = {
        "strategy": strategy,
        "task": task,
        "class_names": class_names,
        "decode_size": decoded.size,
        "backbone": params.model.backbone,
    }
    with atomic_dir(out_dir) as tmp:
        save_classifier(model, tmp / "model.pt", meta)
        write_json(tmp / "history.json", {"epochs": history, "search": []})
        write_json(tmp / "summary.json", summary)
    checkpoint_path.unlink(missing_ok=True)
    saved.clear()
    try:
        checkpoint_dir.rmdir()  # only when nothing else lives there
    except OSError:
        pass
    log.info(
        "%s: best val accuracy %.4f at epoch %d of %d (%.1fs); wrote %s",
        strategy,
        summary["val_accuracy"],
        summary["best_epoch"],
        summary["epochs_run"],
        summary["train_seconds"],
        out_dir,
    )
    return summary


def _check_strategy(strategy: str) -> None:
    if strategy not in TRAINED_STRATEGIES:
        raise TrainingError(
            f"{strategy!r} is not a trained strategy; use one of {', '.join(TRAINED_STRATEGIES)}"
        )
