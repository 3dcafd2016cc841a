"""The house's layout: shared test helpers live in helper modules, never in test modules;
pipeline paths live in one catalog; generated tables match the code.

A test module that imports another runs (and collects) that module's fixtures and module-level
setup a second time under another name; helpers belong in ``tests/*.py`` not named ``test_*``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
CATALOG = "petsml/paths.py"
# a pipeline path spelled out: data/..., reports/..., models/..., mlruns/... (not a URL's tail)
PIPELINE_PATH = re.compile(r"(?<![\w./-])(data|reports|models|mlruns)/[\w.<>{}*/-]+")


def imported_test_modules(path: Path) -> set[str]:
    """The ``tests.test_*`` modules that ``path`` imports, wherever in the file."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):  # relative imports are inside tests/
            base = node.module or "" if node.level == 0 else f"tests.{node.module or ''}"
            names += [base.rstrip(".")] + [f"{base}.{alias.name}" for alias in node.names]
    parts = [name.split(".") + [""] for name in names]
    return {f"tests.{p[1]}" for p in parts if p[0] == "tests" and p[1].startswith("test_")}


def test_no_test_module_imports_another():
    offenders = {
        path.name: sorted(imported)
        for path in sorted(TESTS.glob("test_*.py"))
        if (imported := imported_test_modules(path))
    }
    assert offenders == {}, f"move what these import into a helper module: {offenders}"


def test_the_check_sees_module_level_and_function_level_imports(tmp_path):
    sample = tmp_path / "test_sample.py"
    sample.write_text(
        "from tests.test_pyfunc import make_tiny_model\n"
        "def test_x():\n    import tests.test_track\n    from .test_gate import N_TEST\n"
        "from tests.models import write_jpeg\nfrom tests import project, test_flows\n"
    )
    assert imported_test_modules(sample) == {
        "tests.test_pyfunc",
        "tests.test_track",
        "tests.test_gate",
        "tests.test_flows",
    }


def test_generated_docs_and_dvc_yaml_are_what_the_code_says():
    """docs/ARCHITECTURE.md's tables (`make docs`) and dvc.yaml's code deps and params
    (`make deps`) are written from the code; a stale copy fails here, in the fast tier."""
    from tools import docs_gen

    text = docs_gen.DOC.read_text()
    assert docs_gen.generate(text) == text, "docs/ARCHITECTURE.md is stale: run `make docs`"
    assert "`petsml/paths.py`" in text and "| `feature_extractor` | frozen" in text


def _docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def path_literals(path: Path) -> list[str]:
    """``line: literal`` for each string constant (docstrings aside) that spells a pipeline
    path: those belong in :mod:`petsml.paths`, the one place a move is made."""
    tree = ast.parse(path.read_text(), filename=str(path))
    docs = _docstrings(tree)
    return [
        f"{node.lineno}: {match.group(0)}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs
        if (match := PIPELINE_PATH.search(node.value))
    ]


def test_pipeline_paths_are_spelled_only_in_the_catalog():
    offenders = {
        path.relative_to(REPO).as_posix(): found
        for package in ("petsml", "stages", "pipelines")
        for path in sorted((REPO / package).rglob("*.py"))
        if path.relative_to(REPO).as_posix() != CATALOG and (found := path_literals(path))
    }
    assert offenders == {}, f"name these through {CATALOG}: {offenders}"


def test_the_path_check_sees_literals_in_code_and_messages_but_not_docstrings(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        '"""Writes reports/advice.json."""\n'
        'OUT = "reports/eval/x.csv"\n'
        'def f():\n    """Reads data/splits/train.csv."""\n'
        '    raise ValueError(f"{x}: data/manifest.csv is missing")\n'
        'URL = "https://host/data/file.tar.gz"\n'
    )
    assert path_literals(sample) == ["2: reports/eval/x.csv", "5: data/manifest.csv"]
