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
            {
                "mean + std + grid pooling": probe["rich_pool_val_accuracy"],
                "mean pooling (svm_early)": probe["mean_pool_val_accuracy"],
            },
            "block",
            f"Linear probe by depth ({advice['backbone']})",
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
    """The one line the stage prints: the cell, the strategy and the two measurements."""
    size, sim = advice["size"], advice["similarity"]
    block = f" at block {advice['early_block']}" if advice["early_block"] is not None else ""
    return (
        f"advice: {advice['cell']} -> {advice['strategy']}{block} "
        f"(median {size['train_per_class_median']:g} train images/class, small below "
        f"{size['small_below']}; probe peaks at block {sim['peak_block']} of "
        f"{sim['blocks'] - 1}; more data still helps: {'yes' if size['more_data_helps'] else 'no'})"
    )


def _rho_line(what: str, rho: float | None, note: str | None = None) -> str:
    value = f"{rho:.2f}" if rho is not None else "-" + (f" ({note})" if note else "")
    return f"Spearman rho, {what}: {value}."


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def markdown(advice: dict[str, Any], seconds: float) -> str:
    """``advice.md``: the answer first, then the measurements behind it."""
    block = advice["early_block"]
    at = f" at `model.early_block: {block}`" if block is not None else ""
    lines = [
        "# Which strategy should I ship?",
        "",
        f"**{advice['strategy']}**{at} - cell **{advice['cell']}** of the 2x2 table. "
        + advice["why"],
        "",
        "|  | similar to ImageNet | unlike ImageNet |",
        "|---|---|---|",
        "| small | feature_extractor | svm_early (earlier block) |",
        "| large | finetune_top | finetune_full |",
        "",
        *_size_md(advice["size"]),
        *_similarity_md(advice["similarity"]),
        *_backbones_md(advice["backbones"]),
    ]
    sample = advice["sample"]
    lines += [
        f"Measured on {sample['train_images']} train and {sample['val_images']} validation "
        f"images (seed {sample['seed']}, C={sample['C']:g}) in {seconds:.0f} s.",
        "",
    ]
    return "\n".join(lines)


def _size_md(size: dict[str, Any]) -> list[str]:
    curve = size["learning_curve"]
    gain = curve[-1]["val_accuracy"] - curve[-2]["val_accuracy"]
    lines = [
        "## Size",
        "",
        f"{size['classes']} classes, {size['train_images']} train images: "
        f"{size['train_per_class_min']} in the smallest class, median "
        f"{size['train_per_class_median']:g} (small below {size['small_below']}): "
        f"**{size['verdict']}**.",
        "",
        "Learning curve (linear probe on penultimate features, validation accuracy):",
        "",
        "| fraction | train images per class | val accuracy |",
        "|---|---|---|",
    ]
    for row in curve:
        lines.append(
            f"| {row['fraction']:g} | {row['train_per_class']:g} | {_pct(row['val_accuracy'])} |"
        )
    helps = "yes" if size["more_data_helps"] else "no"
    return [*lines, "", f"More data still helps: **{helps}** (last step {gain:+.3f}).", ""]


def _similarity_md(sim: dict[str, Any]) -> list[str]:
    lines = [
        "## Similarity to ImageNet",
        "",
        "Linear probe on each block of the frozen backbone (validation accuracy):",
        "",
        "| block | mean + std + grid | mean (svm_early's view) | LogME (mean + std + grid) |",
        "|---|---|---|---|",
    ]
    for row in sim["probe"]:
        lines.append(
            f"| {row['block']} | {_pct(row['rich_pool_val_accuracy'])} "
            f"| {_pct(row['mean_pool_val_accuracy'])} | {row['rich_pool_logme']:.3f} |"
        )
    verdict = (
        "the curve peaks before the last block"
        if sim["verdict"] == "unlike"
        else "the last block is the best (within the tolerance)"
    )
    lines += [
        "",
        f"Peak at block {sim['peak_block']}: {verdict}: **{sim['verdict']}**. Best mean-pooled "
        f"block (what `model.early_block: auto` takes): {sim['best_mean_pool_block']}.",
        "",
        _rho_line("LogME's ranking of the blocks vs their probe accuracy", sim["logme_probe_rho"]),
        "",
    ]
    imagenet = sim["imagenet"]
    if imagenet["available"]:
        lines.append(
            "ImageNet classifier on these photos (label-free): mean max-softmax "
            f"{imagenet['mean_max_softmax']:.3f}, mean entropy "
            f"{imagenet['mean_normalised_entropy']:.3f} of the maximum "
            "(high confidence, low entropy = ImageNet-like)."
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
    rho = ranks["spearman_rho"]
    lines += ["", _rho_line("LogME vs probe accuracy", rho, ranks["spearman_note"])]
    lines += [f"- skipped {skip['backbone']}: {skip['reason']}" for skip in ranks["skipped"]]
    return [*lines, ""]
