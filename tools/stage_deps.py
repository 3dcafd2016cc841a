"""Write each DVC stage's code deps and params in dvc.yaml from the code.

- Code deps: the static closure of the stage's ``python -m stages.X`` module over every
  ``import`` statement in the project's modules, module-level or inside a function (lazy
  imports are how `train` picks its strategy's code): editing a module re-runs exactly the
  stages that run it. Only the ``stages/...`` and ``petsml/...`` lines of each ``deps:`` list
  are written; data deps stay as they are.
- Params: the stage module's ``PARAMS`` declaration (the dotted keys or sections it reads;
  ``tests/test_pipeline_e2e.py`` records what each stage really reads and checks the
  declaration covers it). The ``params:`` list is replaced whole.

Outs and comments elsewhere stay as they are.

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


def runtime_refs(root: Path = REPO) -> dict[str, list[str]]:
    """Modules a registry resolves at run time (``"module:attribute"`` references, which no
    import statement shows), by the module that resolves them: ``petsml.training.strategies``
    runs every strategy row's fit, head and block code; the advise stage fits the heads of the
    strategies the 2x2 table names; ``petsml.config`` types each strategy's params.yaml section
    with the row's settings model. Read from the registry in ``root``'s checkout."""
    script = (
        "import json\n"
        "from petsml.catalog import strategies\n"
        "rows = strategies.rows().values()\n"
        "fits = [r for row in rows for r in (row.fit, row.head, row.block_lrs) if r]\n"
        "cells = {strategies.for_cell(c) for c in ('small+similar', 'small+unlike')}\n"
        "heads = [strategies.get(name).head for name in sorted(cells)]\n"
        "sections = [row.settings for row in rows if row.settings]\n"
        "print(json.dumps({'petsml.training.strategies': fits, 'petsml.advice.advise': heads,\n"
        "                  'petsml.config': sections}))\n"
    )
    import json
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", script], cwd=root, check=True,
                         capture_output=True, text=True)  # fmt: skip
    found = json.loads(out.stdout.splitlines()[-1])
    return {k: sorted({ref.partition(":")[0] for ref in v}) for k, v in found.items()}


@cache
def closure(entry: str, root: Path = REPO) -> frozenset[str]:
    """Root-relative files of every project module ``import entry`` can run, packages included,
    and of the modules its registries resolve at run time (:func:`runtime_refs`)."""
    refs = _runtime_refs_cached(root)
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
                todo.extend(refs.get(name, ()))
    return frozenset(p.relative_to(root).as_posix() for p in seen.values())


def declared_params(module: str, root: Path = REPO) -> tuple[str, ...] | None:
    """The ``PARAMS`` tuple of string literals a stage module declares (None: it declares none)."""
    path = module_file(module, root)
    tree = ast.parse(path.read_text(), str(path))
    for node in tree.body:
        target = node.target if isinstance(node, ast.AnnAssign) else (
            node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else None
        )  # fmt: skip
        if isinstance(target, ast.Name) and target.id == "PARAMS" and node.value is not None:
            return tuple(ast.literal_eval(node.value))
    return None


def _params_lines(module: str, indent: str, root: Path) -> list[str]:
    keys = declared_params(module, root)
    if not keys:
        return []
    return [f"{indent}params:\n", *(f"{indent}  - {key}\n" for key in keys)]


@cache
def _runtime_refs_cached(root: Path) -> dict[str, list[str]]:
    return runtime_refs(root)


def generate(text: str, root: Path = REPO) -> str:
    """``dvc.yaml``'s text with every stage's code deps and params written from the code."""
    return _write_params(_write_code_deps(text, root), root)


def _write_params(text: str, root: Path) -> str:
    """Each stage's ``params:`` block replaced by its module's declaration (inserted before
    ``outs:`` when the stage had none; removed when it declares none)."""
    lines = text.splitlines(keepends=True)
    out: list[str] = []
    module = None
    i = 0
    while i < len(lines):
        line = lines[i]
        found = CMD.search(line)
        if found:
            module = found.group(1)
            key_indent = line[: len(line) - len(line.lstrip())]
        stripped = line.strip()
        at_key = module is not None and line.startswith(key_indent) and (
            len(line) - len(line.lstrip()) == len(key_indent))  # fmt: skip
        if at_key and stripped == "params:":
            i += 1
            while i < len(lines) and (
                not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > len(key_indent)
            ) and lines[i].strip():  # fmt: skip
                i += 1
            out += _params_lines(module, key_indent, root)
            module = None
            continue
        if at_key and stripped.startswith("outs:"):
            out += _params_lines(module, key_indent, root)
            module = None
        out.append(line)
        i += 1
    return "".join(out)


def _write_code_deps(text: str, root: Path = REPO) -> str:
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
