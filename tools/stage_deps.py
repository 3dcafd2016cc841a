"""Write each DVC stage's code deps in dvc.yaml from what the stage actually imports.

A stage's code deps are the static closure of its ``python -m stages.X`` module over every
``import`` statement in the project's modules, module-level or inside a function (lazy imports
are how `train` picks its strategy's code): editing a module re-runs exactly the stages that
run it. Only the ``stages/...`` and ``petsml/...`` lines of each ``deps:`` list are written;
data deps, params, outs and comments stay as they are.

    python -m tools.stage_deps           # rewrite dvc.yaml (``make deps``)
    python -m tools.stage_deps --check   # exit 1 and print the difference when it is stale
"""

from __future__ import annotations

import argparse
import ast
import difflib
import re
import sys
from functools import cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CODE_ROOTS = ("petsml", "stages")
DVC_YAML = REPO / "dvc.yaml"
CMD = re.compile(r"python -m (stages\.\w+)")
CODE_LINE = re.compile(r"^(\s*)- (?:stages|petsml)/\S+\s*$")


def module_file(name: str, root: Path = REPO) -> Path | None:
    """The project file that defines module ``name`` (None for third-party modules)."""
    parts = name.split(".")
    if parts[0] not in CODE_ROOTS:
        return None
    base = root.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_names(path: Path, module: str) -> set[str]:
    """Every module name an import statement anywhere in ``path`` may load (a superset)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # submodules
    return names


@cache
def closure(entry: str, root: Path = REPO) -> frozenset[str]:
    """Root-relative files of every project module ``import entry`` can run, packages included."""
    seen: dict[str, Path] = {}
    todo = [entry]
    while todo:
        parts = todo.pop().split(".")
        for depth in range(1, len(parts) + 1):  # importing a.b.c runs a and a.b first
            name = ".".join(parts[:depth])
            path = module_file(name, root)
            if path is not None and name not in seen:
                seen[name] = path
                todo.extend(imported_names(path, name))
    return frozenset(p.relative_to(root).as_posix() for p in seen.values())


def generate(text: str, root: Path = REPO) -> str:
    """``dvc.yaml``'s text with every stage's code-dep lines replaced by its import closure."""
    lines = text.splitlines(keepends=True)
    out: list[str] = []
    module = None
    i = 0
    while i < len(lines):
        line = lines[i]
        found = CMD.search(line)
        if found:
            module = found.group(1)
        if line.strip() == "deps:" and module is not None:
            out.append(line)
            i += 1
            indent = None
            while i < len(lines) and CODE_LINE.match(lines[i]):
                indent = CODE_LINE.match(lines[i]).group(1)
                i += 1
            if indent is None:  # no code lines yet: take the next list item's indentation
                nxt = re.match(r"^(\s*)- ", lines[i]) if i < len(lines) else None
                indent = nxt.group(1) if nxt else " " * (len(line) - len(line.lstrip()) + 2)
            out += [f"{indent}- {path}\n" for path in sorted(closure(module, root))]
            module = None
            continue
        out.append(line)
        i += 1
    return "".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only say whether it is stale")
    args = parser.parse_args(argv)
    current = DVC_YAML.read_text()
    wanted = generate(current)
    if wanted == current:
        print("dvc.yaml: code deps up to date")
        return 0
    if args.check:
        sys.stdout.writelines(difflib.unified_diff(
            current.splitlines(keepends=True), wanted.splitlines(keepends=True),
            "dvc.yaml", "dvc.yaml (generated)",
        ))  # fmt: skip
        print("dvc.yaml: code deps are stale; run `make deps`", file=sys.stderr)
        return 1
    DVC_YAML.write_text(wanted)
    print("dvc.yaml: code deps rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
