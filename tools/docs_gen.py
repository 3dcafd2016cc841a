"""The parts of docs/ARCHITECTURE.md that restate code, written from the code.

Between ``<!-- generated: NAME -->`` and ``<!-- end: NAME -->`` markers: the stages (from
dvc.yaml), the strategy and metric registries (from :mod:`petsml.catalog`) and the modules of
``petsml`` and ``pipelines`` (the first line of each docstring). Hand-written text outside the
markers stays.

    python -m tools.docs_gen           # rewrite docs/ARCHITECTURE.md
    python -m tools.docs_gen --check   # exit 1 when it is stale (the suite runs this)
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "ARCHITECTURE.md"
CODE = re.compile(r"^(stages|petsml)/")
# the packages whose modules the modules table lists (the Prefect flows' modules included)
PACKAGES = ("petsml", "pipelines")


def _cell(items: list[str]) -> str:
    return "<br>".join(f"`{item}`" for item in items) or "-"


def stages_table(root: Path = REPO) -> list[str]:
    spec = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    lines = [
        "| stage | params it reads | data it reads | what it writes |",
        "| --- | --- | --- | --- |",
    ]
    for name, stage in spec.items():
        body = stage.get("do", stage)
        if "foreach" in stage:
            name = f"{name}@<strategy>"
        deps = [d for d in body.get("deps") or [] if not CODE.match(str(d))]
        params = []
        for entry in body.get("params") or []:
            params += [f"{k} (all)" for k in entry] if isinstance(entry, dict) else [entry]
        outs = [next(iter(o)) if isinstance(o, dict) else o for o in body.get("outs") or []]
        deps = [str(d).replace("${item}", "<strategy>") for d in deps]
        outs = [str(o).replace("${item}", "<strategy>") for o in outs]
        lines.append(f"| {name} | {_cell(params)} | {_cell(deps)} | {_cell(outs)} |")
    return lines


def strategies_table() -> list[str]:
    from petsml.catalog import strategies

    lines = ["| strategy | kind | reads | head / blocks trained | settings | advised for |",
             "| --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for row in strategies.rows().values():
        how = row.head if row.kind == "frozen" else row.block_lrs
        extra = " (baseline of the transfer gain)" if row.baseline else ""
        lines.append(
            f"| `{row.name}` | {row.kind}{extra} | "
            f"{'cached ' + row.feature + ' features' if row.kind == 'frozen' else 'decoded images'}"
            f" | `{how}` | {f'`{row.settings}`' if row.settings else '-'} | "
            f"{', '.join(row.advised_for) or '-'} |"
        )
    return lines


def metrics_table() -> list[str]:
    from petsml.catalog import metrics

    lines = ["| metric | from | better | on the card and registry tags | meaning |",
             "| --- | --- | --- | --- | --- |"]  # fmt: skip
    for row in metrics.rows():
        source = f"`{row.compute}`" if row.source == "test" else "summary.json"
        better = "higher" if row.higher_is_better else "lower"
        lines.append(f"| `{row.key}` | {source} | {better} | {'yes' if row.tag else '-'} | "
                     f"{row.help} |")  # fmt: skip
    return lines


def modules_table(root: Path = REPO) -> list[str]:
    lines = ["| module | what it is for |", "| --- | --- |"]
    found = [p for package in PACKAGES for p in sorted((root / package).rglob("*.py"))]
    for path in found:
        if path.name == "__init__.py" and path.parent.name not in PACKAGES:
            continue
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        first = " ".join(doc.split("\n\n")[0].split())
        rel = path.relative_to(root).as_posix()
        lines.append(f"| `{rel}` | {first.replace('|', '/') or '-'} |")
    return lines


SECTIONS = {
    "stages": stages_table,
    "strategies": strategies_table,
    "metrics": metrics_table,
    "modules": modules_table,
}


def generate(text: str) -> str:
    for name, build in SECTIONS.items():
        start, end = f"<!-- generated: {name} -->", f"<!-- end: {name} -->"
        if start not in text or end not in text:
            raise SystemExit(f"{DOC}: the markers {start} ... {end} are missing")
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
        text = head + start + "\n" + "\n".join(build()) + "\n" + end + tail
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    current = DOC.read_text()
    wanted = generate(current)
    if wanted == current:
        print(f"{DOC.relative_to(REPO)}: up to date")
        return 0
    if args.check:
        print(f"{DOC.relative_to(REPO)}: stale; run `make docs`", file=sys.stderr)
        return 1
    DOC.write_text(wanted)
    print(f"{DOC.relative_to(REPO)}: rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
