"""The data_issues stage's files, from what :func:`petsml.data_issues.find.find_issues` found.

- ``reports/data_issues.json``: the contract (every finding with what decided it); no timings,
  so an unchanged pipeline rewrites it byte for byte;
- ``reports/data_issues.md``: the counts and the tables, to read in a terminal or a review;
- ``reports/data_issues.html``: the same with a thumbnail of every photo shown (base64 JPEG
  inline, style inline, no script, no remote URL): one file that opens offline;
- ``reports/data_issues_counts.json``: the counts alone, ``dvc metrics show``'s row;
- ``data/data_issues/``: ``excluded.csv`` (what advise and train leave out) and
  ``label_issues.csv`` (the ranked list, for a spreadsheet or the web page's grid).
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from petsml.data_issues.find import Findings
from petsml.io import atomic_dir, write_json, write_text

THUMB = 112  # px, the longer side of a thumbnail
EXCLUDED_CSV = "excluded.csv"
LABEL_ISSUES_CSV = "label_issues.csv"


@dataclass(frozen=True)
class ReportFiles:
    json: Path
    md: Path
    html: Path
    counts: Path
    data: Path  # the folder of excluded.csv and label_issues.csv


def write_report(
    findings: Findings, files: ReportFiles, photo_paths: Mapping[str, Path], max_shown: int
) -> None:
    """Every file, each atomically; the JSON contract last."""
    with atomic_dir(files.data) as tmp:
        findings.excluded.to_csv(tmp / EXCLUDED_CSV, index=False)
        findings.label_issues.to_csv(tmp / LABEL_ISSUES_CSV, index=False)
    write_json(files.counts, findings.counts)
    write_text(files.md, markdown(findings.report, files.html.name, max_shown))
    write_text(files.html, html_page(findings.report, photo_paths, max_shown))
    write_json(files.json, findings.report)


def summary(report: Mapping[str, Any]) -> str:
    """One line: what the stage prints."""
    c = report["counts"]
    return (
        f"data issues: {c['near_duplicate_pairs']} near-duplicate pair(s) "
        f"({c['near_duplicate_pairs_across_splits']} across splits, "
        f"{c['test_with_train_duplicate']} test photo(s) with a copy in train), "
        f"{c['label_issues']} likely label error(s), "
        f"{c['outliers']} outlier(s), {c['blurry']} blurry, {c['dark']} dark, {c['tiny']} tiny; "
        f"{c['excluded']} train/val photo(s) excluded"
    )


# --------------------------------------------------------------------------- Markdown


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|")

    return [
        "| " + " | ".join(headers) + " |",
        "|" + " --- |" * len(headers),
        *("| " + " | ".join(cell(v) for v in row) + " |" for row in rows),
    ]


def _more(total: int, shown: int) -> list[str]:
    return [f"... and {total - shown} more (all in the JSON)."] if total > shown else []


def _excluded_ids(report: Mapping[str, Any]) -> set[str]:
    return {row["image_id"] for row in report["excluded"]}


def sections(report: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(heading, the sentence under it) per kind: shared by the Markdown and the HTML."""
    dupes, labels = report["near_duplicates"], report["label_issues"]
    out, qual = report["outliers"], report["quality"]["rules"]
    policy = (
        "the train/validation copy is excluded from advise and train, the test copy kept"
        if dupes["on_leak"] == "drop"
        else "the stage fails (data_issues.on_leak: fail)"
    )
    density = out["density"]
    return [
        ("Near-duplicates", f"{len(dupes['pairs'])} pair(s) confirmed of {dupes['candidates']} "
         f"candidate(s) (penultimate cosine >= {report['settings']['duplicate_cosine']}, pHash "
         f"<= {report['settings']['duplicate_hash_bits']} bits, either photo mirrored; "
         f"{dupes['unjudged']} candidate(s) unjudged: a photo without low-frequency layout). "
         f"{len(dupes['test_with_train_duplicate'])} test photo(s) have a copy in train. "
         f"Across splits: {policy}."),
        ("Likely label errors", f"{len(labels['issues'])} of {labels['judged']} train/validation "
         f"photos, most doubtful first: {labels['method']}. Out-of-fold probe: {labels['folds']} "
         f"folds, C={labels['C']}, accuracy {labels['out_of_fold_accuracy']}. Self-confidence: "
         "the probe's probability of the given label. "
         + ("Excluded from advise and train." if report["settings"]["exclude_label_issues"]
            else "Reported only (data_issues.exclude_label_issues: false).")),
        ("Outliers", f"Low density: mean cosine distance to the {density['neighbours']} nearest "
         f"photos at robust z >= {density['z_from']} (median {density['median_distance']:.3f}). "
         f"Not an animal: {out['imagenet_rule']['why']}. Reported only."),
        ("Image quality", f"Blurry: blur effect > {qual['blur_above']}; dark: 99th luminance "
         f"percentile < {qual['dark_below']}; tiny: short side < {qual['tiny_below_px']:.0f} px. "
         "Reported only."),
    ]  # fmt: skip


def markdown(report: Mapping[str, Any], html_name: str, max_shown: int) -> str:
    counts = report["counts"]
    photos = report["photos"]
    text = sections(report)
    lines = [
        "# Data issues",
        "",
        f"{counts['photos']} photos (train {photos['train']}, validation {photos['val']}, test "
        f"{photos['test']}). Thumbnails of every photo listed: `{html_name}`.",
        "",
        *_table(["what", "count"], [(k.replace("_", " "), v) for k, v in counts.items()]),
        "",
        f"## {text[0][0]}", "", text[0][1], "",
    ]  # fmt: skip
    dupes = report["near_duplicates"]
    excluded = _excluded_ids(report)
    rows = [
        (f"{p['a']['split']} `{p['a']['file']}`", f"{p['b']['split']} `{p['b']['file']}`",
         f"{p['cosine']:.3f}", p["hash_bits"], "yes" if p["mirrored"] else "",
         "; ".join(f"{x['image_id']} excluded" for x in (p["a"], p["b"])
                   if x["image_id"] in excluded))
        for p in dupes["pairs"][:max_shown]
    ]  # fmt: skip
    if rows:
        lines += _table(["photo", "copy", "cosine", "pHash bits", "mirrored", "action"], rows)
        lines += _more(len(dupes["pairs"]), len(rows))
    issues = report["label_issues"]["issues"]
    lines += ["", f"## {text[1][0]}", "", text[1][1], ""]
    rows = [
        (i["rank"], i["split"], f"`{i['file']}`", i["given_name"], i["suggested_name"],
         f"{i['self_confidence']:.3f}", f"{i['suggested_probability']:.3f}")
        for i in issues[:max_shown]
    ]  # fmt: skip
    if rows:
        lines += _table(["#", "split", "photo", "given", "suggested", "self-confidence",
                         "p(suggested)"], rows)  # fmt: skip
        lines += _more(len(issues), len(rows))
    found = report["outliers"]["photos"]
    lines += ["", f"## {text[2][0]}", "", text[2][1], ""]
    rows = [
        (p["split"], f"`{p['file']}`", ", ".join(p["reasons"]), f"{p['density_z']:.1f}",
         "" if p.get("imagenet_animal") is None else f"{p['imagenet_animal']:.2f}")
        for p in found[:max_shown]
    ]  # fmt: skip
    if rows:
        lines += _table(["split", "photo", "why", "density z", "ImageNet animal"], rows)
        lines += _more(len(found), len(rows))
    poor = report["quality"]["photos"]
    lines += ["", f"## {text[3][0]}", "", text[3][1], ""]
    rows = [
        (p["split"], f"`{p['file']}`", ", ".join(p["issues"]), f"{p['blur']:.2f}",
         f"{p['brightness']:.2f}", p["short_side"])
        for p in poor[:max_shown]
    ]  # fmt: skip
    if rows:
        lines += _table(["split", "photo", "issues", "blur", "brightness", "short side"], rows)
        lines += _more(len(poor), len(rows))
    lines += ["", "## Excluded from advise and train", ""]
    if report["excluded"]:
        lines += _table(["split", "photo", "reason", "why"],
                        [(r["split"], r["image_id"], r["reason"], r["detail"])
                         for r in report["excluded"]])  # fmt: skip
    else:
        lines.append("Nothing: every train and validation photo is used.")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- HTML


def thumbnail(path: Path) -> str:
    """A ``data:`` URI of a small JPEG of the photo ("" when it cannot be read)."""
    try:
        with Image.open(path) as image:
            if image.format == "JPEG":
                image.draft("RGB", (THUMB * 2, THUMB * 2))
            small = image.convert("RGB")
            small.thumbnail((THUMB, THUMB))
    except (OSError, ValueError):
        return ""
    buffer = io.BytesIO()
    small.save(buffer, format="JPEG", quality=75)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 80em; }
table { border-collapse: collapse; font-size: 0.9em; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
.cards { display: flex; flex-wrap: wrap; gap: 0.6em; }
.card { border: 1px solid #ddd; padding: 0.4em; width: 9.5em; font-size: 0.8em; }
.card img, td img { display: block; max-width: 112px; max-height: 112px; }
.excluded { background: #fff3f0; }
small { color: #666; }
"""


class _Page:
    """Builds the HTML body; a thumbnail per photo, made once (a photo may appear twice)."""

    def __init__(self, report: Mapping[str, Any], photo_paths: Mapping[str, Path], shown: int):
        self.report = report
        self.photo_paths = photo_paths
        self.shown = shown
        self.excluded = _excluded_ids(report)
        self.thumbs: dict[str, str] = {}

    def img(self, image_id: str) -> str:
        if image_id not in self.thumbs:
            path = self.photo_paths.get(image_id)
            self.thumbs[image_id] = thumbnail(path) if path is not None else ""
        uri = self.thumbs[image_id]
        return (
            f'<img alt="{html.escape(image_id)}" src="{uri}">' if uri else "<small>(unread)</small>"
        )

    def more(self, total: int) -> str:
        if total <= self.shown:
            return ""
        return f"<p><small>... and {total - self.shown} more (all in the JSON).</small></p>"

    def pair_cell(self, photo: Mapping[str, Any]) -> str:
        out = photo["image_id"] in self.excluded
        note = " <b>excluded</b>" if out else ""
        cls = ' class="excluded"' if out else ""
        return (
            f"<td{cls}>{self.img(photo['image_id'])}"
            f"{html.escape(photo['split'])}: {html.escape(photo['file'])}<br>"
            f"{html.escape(photo['label'])}{note}</td>"
        )

    def pairs(self, pairs: Sequence[Mapping[str, Any]]) -> str:
        if not pairs:
            return ""
        rows = "".join(
            f"<tr>{self.pair_cell(p['a'])}{self.pair_cell(p['b'])}<td>{p['cosine']:.3f}</td>"
            f"<td>{p['hash_bits']}</td><td>{'yes' if p['mirrored'] else ''}</td></tr>"
            for p in pairs[: self.shown]
        )
        head = "<tr><th>photo</th><th>copy</th><th>cosine</th><th>pHash bits</th><th>mirrored</th>"
        return f"<table>{head}</tr>{rows}</table>{self.more(len(pairs))}"

    def cards(self, entries: Sequence[Mapping[str, Any]], lines) -> str:
        """A card per entry: its thumbnail, then ``lines(entry)`` (already escaped)."""
        shown = []
        for entry in entries[: self.shown]:
            out = " excluded" if entry["image_id"] in self.excluded else ""
            text = "<br>".join(lines(entry))
            shown.append(f'<div class="card{out}">{self.img(entry["image_id"])}{text}</div>')
        return f'<div class="cards">{"".join(shown)}</div>{self.more(len(entries))}'


def _label_lines(issue: Mapping[str, Any]) -> list[str]:
    esc = html.escape
    return [
        f"#{issue['rank']} {esc(issue['split'])}: {esc(issue['image_id'])}",
        f"given <b>{esc(issue['given_name'])}</b>",
        f"suggested <b>{esc(issue['suggested_name'])}</b>",
        f"self-confidence {issue['self_confidence']:.3f}",
    ]


def _outlier_lines(photo: Mapping[str, Any]) -> list[str]:
    lines = [
        f"{html.escape(photo['split'])}: {html.escape(photo['image_id'])}",
        html.escape(", ".join(photo["reasons"])),
        f"density z {photo['density_z']:.1f}",
    ]
    if photo.get("imagenet_animal") is not None:
        lines.append(f"ImageNet animal {photo['imagenet_animal']:.2f}")
    return lines


def _quality_lines(photo: Mapping[str, Any]) -> list[str]:
    return [
        f"{html.escape(photo['split'])}: {html.escape(photo['image_id'])}",
        html.escape(", ".join(photo["issues"])),
        f"blur {photo['blur']:.2f}, brightness {photo['brightness']:.2f}",
        f"{photo['short_side']} px",
    ]


def _excluded_table(rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        return "<p>Nothing: every train and validation photo is used.</p>"
    esc = html.escape
    body = "".join(
        f"<tr><td>{esc(r['split'])}</td><td>{esc(r['image_id'])}</td><td>{esc(r['reason'])}</td>"
        f"<td>{esc(r['detail'])}</td></tr>"
        for r in rows
    )
    return f"<table><tr><th>split</th><th>photo</th><th>reason</th><th>why</th></tr>{body}</table>"


def html_page(report: Mapping[str, Any], photo_paths: Mapping[str, Path], max_shown: int) -> str:
    """The self-contained page (see the module docstring)."""
    page = _Page(report, photo_paths, max_shown)
    counts = "".join(
        f"<tr><td>{html.escape(k.replace('_', ' '))}</td><td>{v}</td></tr>"
        for k, v in report["counts"].items()
    )
    parts = [
        page.pairs(report["near_duplicates"]["pairs"]),
        page.cards(report["label_issues"]["issues"], _label_lines),
        page.cards(report["outliers"]["photos"], _outlier_lines),
        page.cards(report["quality"]["photos"], _quality_lines),
    ]
    body = [f"<h1>Data issues</h1><table>{counts}</table>"]
    for (heading, sentence), part in zip(sections(report), parts, strict=True):
        body.append(f"<h2>{heading}</h2><p>{html.escape(sentence)}</p>{part}")
    body.append(f"<h2>Excluded from advise and train</h2>{_excluded_table(report['excluded'])}")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>Data issues</title><style>{STYLE}</style></head><body>{''.join(body)}"
        "</body></html>\n"
    )
