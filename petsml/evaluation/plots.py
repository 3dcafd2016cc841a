"""Evaluation figures: confusion matrix, misclassified examples, reliability diagram, and the
strategies compared.

Figures are built with :class:`matplotlib.figure.Figure` (Agg canvas), never ``pyplot``, so no
global backend or GUI state is touched and the functions are safe on a headless machine.
Each function writes one PNG atomically. Layouts use fixed margins in inches rather than
``tight_layout``/``bbox_inches="tight"``, which would lay out (and measure every tick label of) the
figure several times over.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from petsml.evaluation.metrics import ReliabilityBins
from petsml.io import atomic_path

DPI = 110


def _save(fig: Figure, target: str | Path) -> None:
    with atomic_path(target, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=DPI, format="png")


def _margins(fig: Figure, left: float, right: float, bottom: float, top: float, **kw) -> None:
    """Margins in inches -> figure fractions."""
    width, height = fig.get_size_inches()
    fig.subplots_adjust(
        left=left / width, right=1 - right / width, bottom=bottom / height, top=1 - top / height,
        **kw,
    )  # fmt: skip


def _short(name: str, width: int = 26) -> str:
    name = name.replace("_", " ")
    return name if len(name) <= width else name[: width - 1] + "…"


def confusion_png(
    cm: np.ndarray, class_names: Sequence[str], target: str | Path, title: str = ""
) -> None:
    """Row-normalised confusion matrix (colour = share of the true class), counts written in.

    Sized with the number of classes so 37 breed names stay legible.
    """
    cm = np.asarray(cm)
    n = len(class_names)
    labels = [_short(str(name)) for name in class_names]
    font = max(5.5, min(10.0, 220 / max(n, 1)))
    label_in = max(len(label) for label in labels) * font * 0.62 / 72 + 0.5  # tick text width
    cell = 0.28 if n > 12 else 0.5
    grid = max(2.5, cell * n)
    fig = Figure(figsize=(grid + label_in + 1.6, grid + label_in + 0.6))
    _margins(fig, left=label_in, right=1.5, bottom=label_in, top=0.5)
    ax = fig.add_subplot()
    support = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, support, out=np.zeros(cm.shape, dtype=float), where=support > 0)
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02, label="share of true class")
    ax.set_xticks(range(n), labels, rotation=90, fontsize=font)
    ax.set_yticks(range(n), labels, fontsize=font)
    ax.set_xticks(np.arange(n + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(n + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="0.88", linewidth=0.5)
    ax.tick_params(which="minor", length=0)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    for i, j in zip(*np.nonzero(cm), strict=True):
        ax.text(
            j,
            i,
            str(int(cm[i, j])),
            ha="center",
            va="center",
            fontsize=min(font, 7.5),
            color="white" if share[i, j] > 0.5 else "black",
        )
    ax.set_title(title or "confusion matrix (test)")
    _save(fig, target)


def misclassified_png(
    images: np.ndarray,
    true_names: Sequence[str],
    pred_names: Sequence[str],
    probs: Sequence[float],
    target: str | Path,
    title: str = "",
    columns: int = 6,
) -> None:
    """A grid of misclassified test images (NHWC uint8), each captioned true / predicted."""
    n = len(images)
    if n == 0:
        fig = Figure(figsize=(5, 1.5))
        fig.text(0.5, 0.5, "no misclassified test images", ha="center", va="center")
        _save(fig, target)
        return
    columns = min(columns, n)
    rows = -(-n // columns)
    fig = Figure(figsize=(2.3 * columns, 2.6 * rows + 0.5))
    _margins(fig, left=0.1, right=0.1, bottom=0.1, top=0.9, hspace=0.35, wspace=0.1)
    for k in range(n):
        ax = fig.add_subplot(rows, columns, k + 1)
        ax.imshow(images[k])
        ax.set_axis_off()
        ax.set_title(
            f"true: {_short(true_names[k], 22)}\npred: {_short(pred_names[k], 22)} "
            f"({probs[k]:.0%})",
            fontsize=7.5,
            color="firebrick",
        )
    fig.suptitle(title or "misclassified test images", fontsize=11)
    _save(fig, target)


def reliability_png(bins: ReliabilityBins, target: str | Path, title: str = "") -> None:
    """Reliability diagram: accuracy per confidence bin against the diagonal, counts below."""
    fig = Figure(figsize=(5.5, 6.2))
    _margins(fig, left=0.8, right=0.2, bottom=0.6, top=0.4, hspace=0.08)
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    width = np.diff(bins.edges)
    left = bins.edges[:-1]
    used = bins.count > 0
    top.bar(left[used], bins.accuracy[used], width=width[used], align="edge",
            edgecolor="black", color="tab:blue", label="accuracy")  # fmt: skip
    gap_low = np.minimum(bins.accuracy[used], bins.confidence[used])
    gap = np.abs(bins.accuracy[used] - bins.confidence[used])
    top.bar(left[used], gap, bottom=gap_low, width=width[used], align="edge", fill=False,
            edgecolor="tab:red", hatch="//", label="gap to mean confidence")  # fmt: skip
    top.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.legend(loc="upper left", fontsize=8)
    top.set_title(title or f"reliability (ECE {bins.ece:.3f})")
    bottom.bar(left, bins.count, width=width, align="edge", color="grey", edgecolor="black")
    bottom.set_xlim(0, 1)
    bottom.set_xlabel("confidence (max softmax probability)")
    bottom.set_ylabel("images")
    _save(fig, target)


def strategies_png(scores: Mapping[str, Mapping[str, float | None]], target: str | Path) -> None:
    """Validation and test accuracy of every strategy as paired horizontal bars.

    The one figure that answers "which strategy won, and did validation predict test?"; the
    track stage puts it on the pipeline's parent run, so it shows without opening any child.
    """
    names = list(scores)
    series = (("val_accuracy", "validation", "tab:blue"), ("test_accuracy", "test", "tab:orange"))
    label_in = max((len(_short(n)) for n in names), default=8) * 9 * 0.62 / 72 + 0.4
    height = 0.55 * len(names) + 1.3
    fig = Figure(figsize=(label_in + 5.5, height))
    _margins(fig, left=label_in, right=0.3, bottom=0.6, top=0.45)
    ax = fig.add_subplot()
    rows = np.arange(len(names))
    bar = 0.38
    for offset, (key, label, colour) in zip((-bar / 2, bar / 2), series, strict=True):
        values = [float(scores[n].get(key) or 0.0) for n in names]
        bars = ax.barh(rows + offset, values, height=bar, color=colour, label=label)
        ax.bar_label(bars, fmt="%.3f", padding=2, fontsize=7.5)
    ax.set_yticks(rows, [_short(n) for n in names], fontsize=9)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.08)
    ax.set_xlabel("accuracy")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("accuracy by strategy (validation: model selection, test: held out)", fontsize=10)
    _save(fig, target)
