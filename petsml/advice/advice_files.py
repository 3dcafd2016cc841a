"""The advice on disk: ``advice.json`` (the contract), ``advice.md`` (to read), CSVs for
``dvc plots show`` and PNGs, each written atomically.

``advice.json`` holds measurements and the decision only - no timings, no paths - so an
unchanged pipeline reproduces it byte for byte.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from petsml.catalog import strategies
from petsml.io import atomic_dir, atomic_path, write_json, write_text

DPI = 110
PROBE_CSV = "probe_depth.csv"
LEARNING_CSV = "learning_curve.csv"
BACKBONES_CSV = "backbones.csv"


def write_advice(
    advice: dict[str, Any], json_path: Path, md_path: Path, plots: Path, seconds: float
):
    """All outputs of the advise stage."""
    with atomic_dir(plots) as tmp:
        probe = pd.DataFrame(advice["similarity"]["probe"])
        probe.to_csv(tmp / PROBE_CSV, index=False)
        curve = pd.DataFrame(advice["size"]["learning_curve"])
        curve.to_csv(tmp / LEARNING_CSV, index=False)
        pd.DataFrame(advice["backbones"]["ranking"]).to_csv(tmp / BACKBONES_CSV, index=False)
        _line_png(
            probe["block"],
            {"each strategy's head (validation)": probe["val_accuracy"]},
            "block (the last: the penultimate features)",
            f"Frozen features by depth ({advice['backbone']})",
            tmp / "probe_depth.png",
        )
        _line_png(
            curve["train_per_class"],
            {"penultimate features": curve["val_accuracy"]},
            "train images per class (median)",
            "Learning curve",
            tmp / "learning_curve.png",
        )
    write_json(json_path, advice)
    write_text(md_path, markdown(advice, seconds))


def _line_png(x: Sequence, series: dict[str, Sequence], xlabel: str, title: str, target: Path):
    fig = Figure(figsize=(5.5, 3.6))
    ax = fig.add_subplot()
    for label, y in series.items():
        ax.plot(list(x), list(y), marker="o", label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("validation accuracy")
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.subplots_adjust(left=0.13, right=0.97, bottom=0.15, top=0.9)
    with atomic_path(target, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=DPI, format="png")


def summary(advice: dict[str, Any]) -> str:
    """The one line the stage prints: the cell, the strategy and why."""
    size, sim = advice["size"], advice["similarity"]
    early = advice["similarity"]["compared"]["early"]
    block = f" at block {advice['early_block']}" if advice["strategy"] == early else ""
    return (
        f"advice: {advice['cell']} -> {advice['strategy']}{block} "
        f"(median {size['train_per_class_median']:g} train images/class, small below "
        f"{size['small_below']}; {sim['verdict']}: {sim['reason']})"
    )


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _p(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def markdown(advice: dict[str, Any], seconds: float) -> str:
    """``advice.md``: the answer first, then the measurements behind it."""
    block = advice["early_block"]
    compared = advice["similarity"]["compared"]
    at = f" at `model.early_block: {block}`" if advice["strategy"] == compared["early"] else ""
    lines = [
        "# Which strategy should I ship?",
        "",
        f"**{advice['strategy']}**{at} - cell **{advice['cell']}** of the 2x2 table. "
        + advice["why"],
        "",
        "|  | similar to ImageNet (or uncertain) | unlike ImageNet |",
        "|---|---|---|",
        *_table_rows(),
        "",
        *_size_md(advice["size"]),
        *_similarity_md(advice["similarity"], block),
        *_backbones_md(advice["backbones"]),
    ]
    sample = advice["sample"]
    lines += [
        f"Heads fitted on {sample['train_images']} train images and scored on "
        f"{sample['val_images']} validation images (seed {sample['seed']}), from the cached "
        f"features, in {seconds:.0f} s.",
        "",
    ]
    return "\n".join(lines)


def _table_rows() -> list[str]:
    """The 2x2 table's rows from the strategy registry (who answers which cell)."""
    return [
        f"| {size} | {strategies.for_cell(size + '+similar')} | "
        f"{strategies.for_cell(size + '+unlike')} |"
        for size in ("small", "large")
    ]


def _size_md(size: dict[str, Any]) -> list[str]:
    step = size["last_step"]
    low, high = step["interval"]
    lines = [
        "## Size",
        "",
        f"{size['classes']} classes, {size['train_images']} train images: "
        f"{size['train_per_class_min']} in the smallest class, median "
        f"{size['train_per_class_median']:g} (small below {size['small_below']}): "
        f"**{size['verdict']}**.",
        "",
        "Learning curve (the penultimate features' head, validation accuracy):",
        "",
        "| fraction | train images per class | val accuracy |",
        "|---|---|---|",
    ]
    for row in size["learning_curve"]:
        lines.append(
            f"| {row['fraction']:g} | {row['train_per_class']:g} | {_pct(row['val_accuracy'])} |"
        )
    helps = "yes" if size["more_data_helps"] else "not shown"
    return [
        *lines,
        "",
        f"From {step['from_per_class']:g} to {step['to_per_class']:g} images per class the "
        f"accuracy moved {100 * step['gain']:+.1f} points ({step['level']:.0%} paired bootstrap "
        f"interval {100 * low:+.1f} to {100 * high:+.1f}): more data still helps: **{helps}**.",
        "",
    ]


def _similarity_md(sim: dict[str, Any], block: int | None) -> list[str]:
    lines = [
        "## Similarity to ImageNet",
        "",
        "Each block read by the strategy that would ship it, on the same validation photos "
        f"({sim['compared']['early']}'s head on an earlier block's mean-pooled output, "
        f"{sim['compared']['penultimate']}'s on the penultimate features); p: one-sided exact "
        "McNemar test that the block beats the penultimate features, adjusted for the number of "
        "blocks (Bonferroni):",
        "",
        "| block | head | features | val accuracy | p | adjusted p |",
        "|---|---|---|---|---|---|",
    ]
    for row in sim["probe"]:
        lines.append(
            f"| {row['block']} | {row['strategy']} (C={row['C']:g}) | {row['dim']} "
            f"| {_pct(row['val_accuracy'])} | {_p(row['p_value'])} | {_p(row['p_adjusted'])} |"
        )
    lines += [
        "",
        f"**{sim['verdict']}** (advise.alpha {sim['alpha']:g}): {sim['reason']}.",
        "",
        f"`model.early_block: auto` takes block {block}, the earlier block that scored best.",
        "",
    ]
    imagenet = sim["imagenet"]
    if imagenet["available"]:
        lines.append(
            f"ImageNet classifier on {imagenet['images']} train and validation photos (label-"
            f"free): mean top-1 probability {imagenet['mean_max_softmax']:.3f}, mean normalised "
            f"entropy {imagenet['mean_normalised_entropy']:.3f}, probability on animal classes "
            f"{imagenet['mean_animal_probability']:.3f}."
        )
    else:
        lines.append(f"ImageNet classifier confidence: not measured ({imagenet['reason']}).")
    return [*lines, ""]


def _backbones_md(ranks: dict[str, Any]) -> list[str]:
    lines = [
        "## Backbones",
        "",
        "| rank (LogME) | backbone | LogME | probe val accuracy |",
        "|---|---|---|---|",
    ]
    for row in ranks["ranking"]:
        lines.append(
            f"| {row['logme_rank']} | {row['backbone']} | {row['logme']:.4f} "
            f"| {_pct(row['probe_val_accuracy'])} |"
        )
    lines += [f"- skipped {skip['backbone']}: {skip['reason']}" for skip in ranks["skipped"]]
    return [*lines, ""]
