"""Measure the data and the backbone, and answer "which strategy should I ship?".

Everything reads the featurize stage's cached features: no photo goes through the backbone
again. The strategies' own heads are fitted on a seeded per-class subsample of the train split
(``advise.max_train_per_class``) and scored on every validation photo:

- size: train images per class (min, median) on the whole train split, and a learning curve
  (the penultimate features' logistic head at ``advise.fractions`` of the subsample per class),
  its last step with a paired bootstrap interval;
- similarity: the head of the strategy the table advises on ImageNet-like photos
  (``feature_extractor``: penultimate features) against the head of the one it advises on
  unlike photos (``svm_early``) on each earlier block, paired on the same photos
  (:mod:`petsml.advice.decision`), and the ImageNet classifier's confidence on every train and
  validation photo (label-free);
- backbones: ``model.backbone`` (and any ``advise.backbones``) by LogME and probe accuracy.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from petsml import paths
from petsml.advice.decision import Probe, decide, similarity_verdict
from petsml.advice.logme import logme
from petsml.advice.probe import nested_fractions, per_class_subset
from petsml.advice.stats import paired_bootstrap_ci
from petsml.catalog import strategies
from petsml.catalog.refs import resolve
from petsml.config import Params
from petsml.data.feature_file import SplitFeatures, feature_path
from petsml.errors import PetsError
from petsml.models.heads import BLAS_THREADS, HeadFit, fit_logistic

log = logging.getLogger(__name__)

# A candidate backbone's penultimate features of (train ids, val ids), or why it was skipped.
Candidates = Callable[[str, list[str], list[str]], "tuple[np.ndarray, np.ndarray] | str"]

ADVICE_VERSION = 2  # 2: decided by paired tests on the strategies' own heads
LEVEL = 0.95  # the learning curve's interval
PROBE_THREADS = 2  # head fits side by side (:func:`in_threads`)
T = TypeVar("T")


class AdviceError(PetsError):
    """The splits cannot support the measurements (e.g. fewer than two classes in train)."""


@dataclass
class Sample:
    """What every head is fitted and scored on: train subsample and validation, as features."""

    train_ids: list[str]
    val_ids: list[str]
    y_train: np.ndarray
    y_val: np.ndarray
    train_rows: np.ndarray  # rows of the train feature file
    val_rows: np.ndarray  # rows of the validation feature file


def draw_sample(
    train: pd.DataFrame, val: pd.DataFrame, tf: SplitFeatures, vf: SplitFeatures, params: Params
) -> Sample:
    """At most ``advise.max_train_per_class`` train rows per class (seeded), every validation
    row up to ``advise.max_val_per_class``; matched to the feature files by image id."""
    cfg = params.advise
    labels = train["label"].to_numpy()
    if np.unique(labels).size < 2:
        raise AdviceError(
            f"{paths.split_csv('train')} holds fewer than two classes; the advise stage needs at "
            "least two to probe anything (check the data and data.task in params.yaml)."
        )
    if val.empty:
        raise AdviceError(
            f"{paths.split_csv('val')} is empty; raise split.val_fraction in params.yaml so the "
            "probes have images to be scored on."
        )
    tr = per_class_subset(labels, cfg.max_train_per_class, cfg.seed)
    va = per_class_subset(val["label"].to_numpy(), cfg.max_val_per_class, cfg.seed)
    train_ids = train["image_id"].iloc[tr].tolist()
    val_ids = val["image_id"].iloc[va].tolist()
    return Sample(
        train_ids=train_ids,
        val_ids=val_ids,
        y_train=labels[tr],
        y_val=val["label"].to_numpy()[va],
        train_rows=tf.rows(train_ids, str(feature_path(paths.FEATURES, "train"))),
        val_rows=vf.rows(val_ids, str(feature_path(paths.FEATURES, "val"))),
    )


@contextmanager
def _timed(timings: dict[str, float] | None, part: str) -> Iterator[None]:
    """Adds the seconds the block takes to ``timings[part]`` (when timings are kept)."""
    started = time.perf_counter()
    try:
        yield
    finally:
        if timings is not None:
            timings[part] = timings.get(part, 0.0) + time.perf_counter() - started


def size_facts(train: pd.DataFrame) -> dict[str, Any]:
    counts = train["label"].value_counts()
    return {
        "classes": int(counts.size),
        "train_images": int(len(train)),
        "train_per_class_min": int(counts.min()),
        "train_per_class_median": float(counts.median()),
    }


def _correct(head: HeadFit, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return head.predict(x) == y


def in_threads(jobs: list[Callable[[], T]]) -> list[T]:
    """Run independent head fits side by side (:data:`PROBE_THREADS`), results in job order.

    The solvers spend their time in BLAS and NumPy, which let go of the GIL, so two fits take
    about the time of one on two cores; BLAS stays on one thread throughout, so every product
    is rounded as when the fits ran one after the other."""
    with threadpool_limits(BLAS_THREADS), ThreadPoolExecutor(PROBE_THREADS) as pool:
        return [future.result() for future in [pool.submit(job) for job in jobs]]


def learning_curve(
    x_train: np.ndarray,
    sample: Sample,
    x_val: np.ndarray,
    fit_head: Callable[..., HeadFit],
    params: Params,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``fit_head`` (the penultimate strategy's head at its chosen C) on growing nested shares
    of the train subsample; the rows, and the last step's gain with its paired bootstrap
    interval."""
    cfg = params.advise
    rows, correct = [], []
    subsets = nested_fractions(sample.y_train, cfg.fractions, cfg.seed)
    learnable = [np.unique(sample.y_train[subset]).size >= 2 for subset in subsets]
    heads = iter(in_threads([
        partial(fit_head, x_train[subset], sample.y_train[subset], x_val, sample.y_val)
        for subset, ok in zip(subsets, learnable, strict=True) if ok
    ]))  # fmt: skip
    for fraction, subset, ok in zip(cfg.fractions, subsets, learnable, strict=True):
        y = sample.y_train[subset]
        if not ok:  # one image in all: nothing a head can learn
            right = sample.y_val == y[0]
        else:
            right = _correct(next(heads), x_val, sample.y_val)
        correct.append(right)
        per_class = np.bincount(np.unique(y, return_inverse=True)[1])
        rows.append({
            "fraction": fraction,
            "train_images": int(subset.size),
            "train_per_class": float(np.median(per_class)),
            "val_accuracy": float(np.mean(right)),
        })  # fmt: skip
    gain, low, high = paired_bootstrap_ci(correct[-1], correct[-2], LEVEL, seed=cfg.seed)
    step = {
        "gain": gain,
        "interval": [low, high],
        "level": LEVEL,
        "from_per_class": rows[-2]["train_per_class"],
        "to_per_class": rows[-1]["train_per_class"],
    }
    return rows, step


def imagenet_likeness(train: SplitFeatures, val: SplitFeatures) -> dict[str, Any]:
    """The pretrained ImageNet classifier on every train and validation photo (label-free)."""
    if not train.imagenet:
        return {
            "available": False,
            "reason": "the backbone ships no ImageNet classifier (only the offline ones do)",
        }
    stats = {k: np.concatenate([train.imagenet[k], val.imagenet[k]]) for k in train.imagenet}
    return {
        "available": True,
        "mean_max_softmax": float(stats["max_prob"].mean()),
        "mean_normalised_entropy": float(stats["entropy"].mean()),
        "mean_animal_probability": float(stats["animal"].mean()),
        "images": int(stats["max_prob"].size),
    }


def _probe_row(block: int | str, head: HeadFit, correct: np.ndarray, dim: int, strategy: str):
    return {
        "block": block,
        "strategy": strategy,
        "dim": dim,
        "C": head.C,
        "val_accuracy": float(np.mean(correct)),
    }


@dataclass(frozen=True)
class Heads:
    """The two frozen strategies the similarity call compares, as the registry has them: the one
    the table advises on ImageNet-like photos (penultimate features) and the one it advises on
    unlike ones (an earlier block); each with its own head fitter and C grid."""

    penultimate: str
    early: str

    @classmethod
    def of_registry(cls) -> Heads:
        return cls(strategies.for_cell("small+similar"), strategies.for_cell("small+unlike"))

    def fit(self, strategy: str, params: Params, *data: np.ndarray) -> HeadFit:
        row = strategies.get(strategy)
        return resolve(row.head)(*data, params.settings_of(strategy).C)


def similarity(
    tf: SplitFeatures, vf: SplitFeatures, sample: Sample, params: Params, timings=None
) -> tuple[dict[str, Any], Any, HeadFit]:
    """The similarity measurements and verdict; also the penultimate strategy's fitted head."""
    cfg = params.advise
    heads = Heads.of_registry()
    y_tr, y_va = sample.y_train, sample.y_val
    blocks = list(range(tf.n_blocks - 1))
    with _timed(timings, "probe heads"):
        x_tr, x_va = tf.penultimate[sample.train_rows], vf.penultimate[sample.val_rows]
        data = [(tf.block(b)[sample.train_rows], vf.block(b)[sample.val_rows]) for b in blocks]
        fitted = in_threads(
            [partial(heads.fit, heads.penultimate, params, x_tr, y_tr, x_va, y_va)]
            + [
                partial(heads.fit, heads.early, params, b_tr, y_tr, b_va, y_va)
                for b_tr, b_va in data
            ]
        )
    pen_head = fitted[0]
    pen = Probe(tf.n_blocks - 1, _correct(pen_head, x_va, y_va))
    rows = [_probe_row(pen.block, pen_head, pen.correct, x_tr.shape[1], heads.penultimate)]
    earlier = []
    for block, (b_tr, b_va), head in zip(blocks, data, fitted[1:], strict=True):
        earlier.append(Probe(block, _correct(head, b_va, y_va)))
        rows.append(_probe_row(block, head, earlier[-1].correct, b_tr.shape[1], heads.early))
    rows.sort(key=lambda row: row["block"])
    imagenet = imagenet_likeness(tf, vf)
    confidence = imagenet["mean_max_softmax"] if imagenet["available"] else None
    verdict = similarity_verdict(pen, earlier, cfg.alpha, confidence, cfg.imagenet_confidence)
    by_block = {t["block"]: t for t in verdict.tests}
    for row in rows:
        test = by_block.get(row["block"], {})
        row["p_value"], row["p_adjusted"] = test.get("p_value"), test.get("p_adjusted")
    out = {
        "probe": rows,
        "blocks": tf.n_blocks,
        "compared": {"penultimate": heads.penultimate, "early": heads.early},
        "penultimate_val_accuracy": pen.accuracy,
        "best_block": verdict.best_block,
        "p_value": verdict.p_value,
        "alpha": cfg.alpha,
        "imagenet": imagenet,
        "imagenet_confidence": cfg.imagenet_confidence,
        "verdict": verdict.verdict,
        "reason": verdict.reason,
    }
    return out, verdict, pen_head


def rank_backbones(
    params: Params,
    tf: SplitFeatures,
    vf: SplitFeatures,
    sample: Sample,
    extra: Candidates | None,
    timings: dict[str, float] | None = None,
) -> dict[str, Any]:
    """LogME and probe accuracy of ``model.backbone`` (from the cached features) and of each
    ``advise.backbones`` candidate (``extra(name, train_ids, val_ids)``: its features of the
    sampled photos, or the reason it was skipped)."""
    C = params.advise.C
    rows, skipped = [], []
    for name in dict.fromkeys([params.model.backbone, *params.advise.backbones]):
        if name == params.model.backbone:
            x_tr, x_va = tf.penultimate[sample.train_rows], vf.penultimate[sample.val_rows]
        else:
            with _timed(timings, "other backbones: frozen pass"):
                got = (
                    extra(name, sample.train_ids, sample.val_ids)
                    if extra is not None
                    else "no frozen pass available"
                )
            if isinstance(got, str):
                log.warning("advise: backbone %s skipped: %s", name, got)
                skipped.append({"backbone": name, "reason": got})
                continue
            x_tr, x_va = got
        with _timed(timings, "backbones: LogME + probe"):
            head = fit_logistic(x_tr, sample.y_train, x_va, sample.y_val, [C])
            rows.append({
                "backbone": name,
                "logme": logme(x_tr, sample.y_train),
                "probe_val_accuracy": float(np.mean(_correct(head, x_va, sample.y_val))),
            })  # fmt: skip
    rows.sort(key=lambda r: -r["logme"])
    for position, row in enumerate(rows, 1):
        row["logme_rank"] = position
    return {"ranking": rows, "skipped": skipped}


def advise(
    params: Params,
    train: pd.DataFrame,
    val: pd.DataFrame,
    train_features: SplitFeatures,
    val_features: SplitFeatures,
    extra: Candidates | None = None,
    timings: dict[str, float] | None = None,
) -> dict[str, Any]:
    """The advice as a JSON-ready dict (``reports/advice.json``'s contract); ``timings``, when
    given, receives the seconds each part took (kept out of the JSON: it must reproduce)."""
    cfg = params.advise
    tf, vf = train_features, val_features
    sample = draw_sample(train, val, tf, vf, params)
    log.info("advise: %s features of %d train (of %d) and %d val images",
             params.model.backbone, len(sample.y_train), len(train), len(sample.y_val))  # fmt: skip
    sim, verdict, pen_head = similarity(tf, vf, sample, params, timings)
    size = size_facts(train)
    decision = decide(size["train_per_class_median"], cfg.small_below, verdict)
    with _timed(timings, "learning curve"):
        x_tr, x_va = tf.penultimate[sample.train_rows], vf.penultimate[sample.val_rows]
        penultimate = resolve(strategies.get(Heads.of_registry().penultimate).head)

        def fit_head(*data: np.ndarray) -> HeadFit:
            return penultimate(*data, [pen_head.C])

        curve, step = learning_curve(x_tr, sample, x_va, fit_head, params)
    backbones = rank_backbones(params, tf, vf, sample, extra, timings)
    return {
        "version": ADVICE_VERSION,
        "backbone": params.model.backbone,
        "task": params.data.task,
        "cell": decision.cell,
        "strategy": decision.strategy,
        "early_block": decision.early_block,
        "why": decision.why,
        "size": {
            **size,
            "small_below": cfg.small_below,
            "verdict": decision.size,
            "learning_curve": curve,
            "last_step": step,
            "more_data_helps": step["interval"][0] > 0,
        },
        "similarity": sim,
        "backbones": backbones,
        "sample": {
            "train_images": int(len(sample.y_train)),
            "val_images": int(len(sample.y_val)),
            "seed": cfg.seed,
        },
    }
