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

Checkpoints and resuming: :mod:`petsml.training.checkpoint`; the step, epoch, scoring and
schedule: :mod:`petsml.training.loop`; who trains at which rate: :mod:`petsml.training.param_groups`
and the strategy's row in :mod:`petsml.training.strategies`. This module is the recipe that puts
them together (:func:`fit`).

This module never imports MLflow, Prefect or DVC, so it runs alone on a GPU machine.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from petsml import paths
from petsml.config import Params
from petsml.data.tensors import inference_batch_size
from petsml.models.model_dir import ModelMeta, Summary, write_model_dir
from petsml.training import cached_top, distributed
from petsml.training.checkpoint import (
    CHECKPOINT,
    TrainingInterrupted,
    code_digest,
    fingerprint,
    interrupted,
    load_checkpoint,
    remove_checkpoint,
    restore,
    save_checkpoint,
)
from petsml.training.loop import (
    Progress,
    SplitData,
    TrainingError,
    centre_crops,
    check_loss,
    cpu_state,
    evaluate,
    set_train_mode,
    train_epoch_full,
)
from petsml.training.param_groups import trained_strategy
from petsml.training.probe_init import init_head_from_probe, pooled_features
from petsml.training.run import Run, log_start, set_up
from petsml.training.spec import EpochCallback, Inputs, Strategy

log = logging.getLogger(__name__)


def train_strategy(
    strategy: str | Strategy,
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
    inputs = Inputs(
        splits_dir=Path(splits_dir), decoded_dir=Path(decoded_dir),
        checkpoint_dir=Path(checkpoint_dir), resume=resume, on_epoch_end=on_epoch_end,
    )  # fmt: skip
    return fit(trained_strategy(strategy), params, Path(out_dir), inputs)


def fit(strategy: Strategy, params: Params, out_dir: Path, inputs: Inputs) -> dict[str, Any]:
    """The registry's fit function for trained strategies (see :func:`train_strategy`)."""
    strategy = trained_strategy(strategy)
    if inputs.checkpoint_dir is None:
        raise TrainingError(f"{strategy.name}: a trained strategy needs a checkpoint_dir")
    checkpoint_path = Path(inputs.checkpoint_dir) / CHECKPOINT
    saved: dict[str, int] = {}  # {"epoch": e} once a resumable checkpoint holds epoch e
    world = distributed.detect(params.train.distributed)
    if world.enabled and strategy.cache_frozen_trunk:
        raise TrainingError(
            f"{strategy.name} trains on a cached frozen trunk in one process; launch it "
            "without torchrun (data-parallel training: finetune_full and scratch)"
        )
    distributed.check_batch(world, params.train.batch_size)
    try:
        return _fit(strategy, params, Path(out_dir), inputs, saved, world)
    except KeyboardInterrupt:
        note = interrupted(strategy.name, checkpoint_path, saved.get("epoch"), params.train.epochs)
        raise TrainingInterrupted(note) from None
    finally:
        distributed.stop(world)


def _fit(
    strategy: Strategy,
    params: Params,
    out_dir: Path,
    inputs: Inputs,
    saved: dict[str, int],
    world: distributed.World = distributed.SINGLE,
) -> dict[str, Any]:
    """The recipe: set up, resume or start, cache and probe, train epochs, write the folder
    (data-parallel ranks all train; rank 0 alone writes checkpoints and the folder)."""
    t = params.train
    checkpoint_dir = Path(inputs.checkpoint_dir)
    checkpoint_path = checkpoint_dir / CHECKPOINT
    run = set_up(strategy, params, inputs, world)
    started = time.perf_counter()
    fp = fingerprint(strategy.name, params, run.train, run.val, run.decode_size, code_digest())
    log.debug("fingerprint %.12s in %.2fs", fp, time.perf_counter() - started)
    progress = _start(run, inputs.resume, checkpoint_path, fp)
    if progress.resumed_from is not None:
        saved["epoch"] = progress.resumed_from
    log_start(run)
    setup_seconds = 0.0  # the frozen-block cache and the probe: one-offs, counted in epoch 1
    if run.top_forward is not None and progress.next_epoch <= t.epochs:
        if not progress.stopped_early:
            setup_seconds += _cache_frozen_trunk(run)
    if progress.resumed_from is None and run.from_probe:
        setup_seconds += _start_from_probe(run, progress)
    if world.enabled:  # after the probe: DDP starts every rank from rank 0's weights
        run.train_forward = distributed.wrap(run.model, world, run.device)
        if t.compile:
            run.train_forward = torch.compile(run.train_forward)
    for epoch in range(progress.next_epoch, t.epochs + 1):
        if progress.stopped_early:
            break
        record = _train_epoch(run, epoch, setup_seconds)
        setup_seconds = 0.0
        progress.record(record, run.model, t.patience, t.epochs)
        _log_epoch(run, progress, record)
        if world.is_main:
            save_checkpoint(
                checkpoint_path, fp, strategy.name, run.model, run.optimizer, run.scheduler,
                progress, run.generator,
            )  # fmt: skip
        saved["epoch"] = epoch
        if inputs.on_epoch_end is not None:
            inputs.on_epoch_end(epoch, run.model, record)
    summary = _write_model_dir(run, progress, out_dir, write=world.is_main)
    distributed.barrier(world)  # every rank is done with the checkpoint
    if world.is_main:
        remove_checkpoint(checkpoint_dir)
    saved.clear()
    log.info(
        "%s: best val accuracy %.4f at epoch %d of %d (%.1fs); wrote %s",
        strategy.name,
        summary["val_accuracy"],
        summary["best_epoch"],
        summary["epochs_run"],
        summary["train_seconds"],
        out_dir,
    )
    return summary


def _start(run: Run, resume: bool, checkpoint_path: Path, fp: str) -> Progress:
    """The checkpoint's progress when resuming from a matching one, else a fresh start."""
    state = None
    if resume:
        state = load_checkpoint(checkpoint_path, fp)
    elif checkpoint_path.exists():
        log.info("resume is off: ignoring the checkpoint at %s", checkpoint_path)
    if state is None:
        return Progress()
    progress = restore(state, run.model, run.optimizer, run.scheduler, run.generator)
    log.info(
        "%s: resuming after epoch %d from %s", run.strategy.name, state["epoch"], checkpoint_path
    )
    return progress


def _cache_frozen_trunk(run: Run) -> float:
    """Run the frozen blocks once over train and val (:mod:`cached_top`); the seconds taken."""
    started = time.perf_counter()
    set_train_mode(run.model, run.groups.frozen_blocks, run.from_probe)
    run.caches = cached_top.build_caches(
        run.split, run.train, run.val, run.prep, run.device, flip=run.settings.cache_flip,
        batch_size=inference_batch_size(run.params.features.batch_size, run.device),
        name=run.strategy.name, precision=run.params.model.precision,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    cached_top.log_caches(run.strategy.name, run.caches, seconds)
    return seconds


def _start_from_probe(run: Run, progress: Progress) -> float:
    """Fit the head as a linear probe; the probe-initialised model competes as epoch 0."""
    started = time.perf_counter()
    init_head_from_probe(run.model, *_probe_features(run), run.settings.probe_C)
    _, probe_acc = _validate(run)
    progress.best = {"accuracy": probe_acc, "epoch": 0, "state": cpu_state(run.model)}
    log.info(
        "%s: the probe-initialised model scores val accuracy %.4f", run.strategy.name, probe_acc
    )
    return time.perf_counter() - started


def _probe_features(
    run: Run,
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """(features, labels) of train and val for the probe: pooled penultimate vectors of the
    centre crops, in eval mode; from the frozen-block cache when there is one (the top blocks
    only), else through the whole backbone."""
    run.model.eval()
    size = inference_batch_size(run.params.features.batch_size, run.device)
    if run.caches is not None and run.split is not None:
        forward = run.split.top_part
        streams = [cached_top.centre_batches(c, run.device, size) for c in run.caches]
    else:
        forward = run.model.backbone.forward_features
        depth = run.params.train.prefetch
        streams = [centre_crops(d, run.prep, run.device, size, depth) for d in (run.train, run.val)]
    precision = run.params.model.precision
    feats = [
        pooled_features(forward, (x for x, _ in stream), run.device, precision)
        for stream in streams
    ]
    return (feats[0], run.train.labels), (feats[1], run.val.labels)


# --------------------------------------------------------------------------------------------
# Epochs


def _validate(run: Run) -> tuple[float, float]:
    """Validation loss and accuracy: from the cached frozen outputs when there are some;
    data-parallel, each rank scores every ``size``-th image and the sums are reduced."""
    size = inference_batch_size(run.params.features.batch_size, run.device)
    precision = run.params.model.precision
    if run.caches is not None:
        return cached_top.evaluate(
            run.top_forward, run.model, run.caches[1], run.device, size, precision
        )
    world, val = run.world, run.val
    if world.enabled:
        picked = slice(world.rank, None, world.size)
        val = SplitData(val.image_ids[picked], val.images[picked], val.labels[picked])
    loss, accuracy = evaluate(
        run.forward, run.model, val, run.prep, run.device, size,
        run.params.train.prefetch, precision,
    )  # fmt: skip
    if not world.enabled:
        return loss, accuracy
    n = len(val.labels)
    loss_sum, correct, total = distributed.sum_over_ranks(world, loss * n, accuracy * n, n)
    return loss_sum / max(1, total), correct / max(1, total)


def _train_epoch(run: Run, epoch: int, setup_seconds: float) -> dict[str, Any]:
    """Train one epoch (cached top or full forward), validate; the epoch's history record."""
    t = run.params.train
    started = time.perf_counter() - setup_seconds
    lr = run.optimizer.param_groups[0]["lr"]
    shuffle_seed = t.seed * 100_003 + epoch
    desc = f"{run.strategy.name} {epoch}/{t.epochs}"
    precision = run.params.model.precision
    if run.caches is not None:
        set_train_mode(run.model, run.groups.frozen_blocks, run.from_probe)
        train_loss, train_acc = cached_top.train_epoch(
            run.top_forward, run.caches[0], run.optimizer, run.scheduler, run.device,
            t.batch_size, seed=shuffle_seed, desc=desc, precision=precision,
        )  # fmt: skip
        check_loss(train_loss)
    else:
        train_loss, train_acc = train_epoch_full(
            run.train_forward or run.forward, run.model, run.groups.frozen_blocks, run.train,
            run.prep, run.optimizer, run.scheduler, run.generator, run.device, t.batch_size,
            shuffle_seed=shuffle_seed, desc=desc, prefetch_depth=t.prefetch,
            precision=precision, keep_norm_stats=run.from_probe, world=run.world,
        )  # fmt: skip
    val_loss, val_acc = _validate(run)
    return {
        "epoch": epoch,
        "train_loss": train_loss,
        "train_accuracy": train_acc,
        "val_loss": val_loss,
        "val_accuracy": val_acc,
        "lr": lr,
        "seconds": time.perf_counter() - started,
    }


def _log_epoch(run: Run, progress: Progress, record: dict[str, Any]) -> None:
    name, epoch, epochs = run.strategy.name, record["epoch"], run.params.train.epochs
    log.info(
        "%s epoch %d/%d: train loss %.4f acc %.4f | val loss %.4f acc %.4f | lr %.2e | %.1fs%s",
        name,
        epoch,
        epochs,
        record["train_loss"],
        record["train_accuracy"],
        record["val_loss"],
        record["val_accuracy"],
        record["lr"],
        record["seconds"],
        " (best)" if progress.best["epoch"] == epoch else "",
    )
    if progress.stopped_early:
        log.info(
            "%s: early stop, no val accuracy gain for %d epochs (best %.4f at epoch %d)",
            name,
            progress.bad_epochs,
            progress.best["accuracy"],
            progress.best["epoch"],
        )


# --------------------------------------------------------------------------------------------
# The model folder


def _write_model_dir(
    run: Run, progress: Progress, out_dir: Path, write: bool = True
) -> dict[str, Any]:
    """Load the best epoch's weights and write the model folder (unless ``write`` is false: a
    data-parallel rank other than 0); returns its summary."""
    if progress.best["state"] is None:
        raise TrainingError("no epoch was trained; check train.epochs")
    model = run.model
    model.load_state_dict(progress.best["state"])
    model = model.to("cpu", memory_format=torch.contiguous_format).eval()
    model.tta = run.params.train.tta  # trained and validated without; shipped with
    t, params, name = run.params.train, run.params, run.strategy.name
    history = progress.history
    summary = Summary(
        strategy=name,
        task=params.data.task,
        backbone=params.model.backbone,
        val_accuracy=float(progress.best["accuracy"]),
        train_seconds=float(sum(r["seconds"] for r in history)),
        best_epoch=int(progress.best["epoch"]),
        epochs_run=len(history),
        device=run.device.type,
        stopped_early=bool(progress.stopped_early),
        resumed_from_epoch=progress.resumed_from,
        params={
            **(run.settings.model_dump() if run.settings is not None else {}),
            "pretrained": params.model.pretrained and run.strategy.pretrained,
            "epochs": t.epochs,
            "batch_size": t.batch_size,
            "patience": t.patience,
            "warmup_epochs": t.warmup_epochs,
            "seed": t.seed,
        },
    )
    meta = ModelMeta(
        strategy=name,
        task=params.data.task,
        class_names=run.class_names,
        decode_size=run.decode_size,
        backbone=params.model.backbone,
    )
    if write:
        write_model_dir(out_dir, model, meta, summary=summary, epochs=history)
    return summary.as_dict()
